"""The one exception type for bad input: reported as one line on stderr with exit code 2."""


class UserError(Exception):
    """A problem with what the user asked for (a config value, a missing file), stated with its fix."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM arrived during training: the run is marked FAILED and resumes from its last checkpoint.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` on the way swallows it.
    """

    exit_code = 143
