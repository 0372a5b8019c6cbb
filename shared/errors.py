"""Errors a user can act on.

`CasebookError` and its subclasses carry a one-line message for a person: the CLI prints it and
exits with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class CasebookError(Exception):
    """A problem with the user's input, files or data, stated in one line."""


class DataError(CasebookError):
    """Malformed, missing or rejected data (a bad file, a batch the data gate quarantined)."""


class ArtifactError(CasebookError):
    """A model artifact that is missing, corrupt, tampered with or fails its sanity check."""


def first_line(err: BaseException) -> str:
    """An exception as one line for a log, a report or an HTTP answer: the first non-blank line
    of its message, or its type's name when the message is blank."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
