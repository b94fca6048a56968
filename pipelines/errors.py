"""Errors raised by `pipelines` for data a user can fix (missing, unknown, unreadable)."""


class DataError(ValueError):
    """The data asked for cannot be loaded. The message is one line naming the problem and the fix."""


class DataWarning(UserWarning):
    """Some of the data cannot be used (for instance unreadable images, which are skipped)."""
