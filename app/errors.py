"""One place that turns user-fixable errors into a single line on stderr and exit status 2."""

import contextlib
import sys

from models.errors import ModelConfigError
from pipelines.errors import DataError
from rundir.layout import RunDirError

USER_ERRORS = (ModelConfigError, DataError, RunDirError)


@contextlib.contextmanager
def one_line_errors(program):
    """Run the body; a user error prints `<program>: error: <message>` and exits with status 2."""
    try:
        yield
    except USER_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"{program}: error: {message}", file=sys.stderr)
        sys.exit(2)
