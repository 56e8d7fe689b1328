"""The base of errors about what a run was given (data, media, rewards, disk), as opposed to bugs."""


class InputError(Exception):
    """Bad input: the message is complete on one line (the file and line, and what was expected), so entry points
    print it without a traceback."""
