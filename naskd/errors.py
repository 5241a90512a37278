"""User-facing errors.

Anything a user can fix (a path, a name, a setting) raises :class:`NaskdError`; the CLI prints its
message and exits with status 2, without a traceback. Programming errors stay ordinary exceptions.
"""


class NaskdError(Exception):
    """An error caused by input the user controls; the message says what is wrong and the way out."""


class DataError(NaskdError):
    """A data file is missing or malformed (messages carry ``path:LINE``)."""


class ConfigError(NaskdError):
    """A setting is unknown, mistyped or impossible."""
