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
