"""Errors raised by `models` for input a user can fix (bad names, shapes, weight files)."""


class ModelConfigError(ValueError):
    """A model could not be built from what the user asked for.

    The message is one line that names the problem and the fix; the command-line entry points
    print it without a traceback.
    """
