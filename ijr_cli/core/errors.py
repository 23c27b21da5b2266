"""The one exception type for bad input: reported as one line on stderr with exit code 2."""


class UserError(Exception):
    """A problem with what the user asked for (a config value, a missing file), stated with its fix."""

    exit_code = 2


class Terminated(BaseException):
    """A signal stopped training (SIGTERM, or SLURM's SIGUSR2): the run is marked STOPPED (FAILED when it could
    not stop at a step boundary) and resumes from its last checkpoint.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` on the way swallows it.
    """

    exit_code = 143
