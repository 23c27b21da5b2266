"""The one exception type for bad input: reported as one line on stderr with exit code 2."""


class UserError(Exception):
    """A problem with what the user asked for (a config value, a missing file), stated with its fix."""

    exit_code = 2
