"""The one error type of the media layer."""


class MediaError(ValueError):
    """Bad media in a row: the message names the row, the file and what was expected."""
