"""The one error type of the media layer."""

from ..errors import InputError


class MediaError(InputError, ValueError):
    """Bad media in a row: the message names the row, the file and what was expected."""
