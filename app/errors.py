"""One place that turns user-fixable errors into a single line on stderr and exit status 2."""

import contextlib
import sys
import warnings

from models.errors import ModelConfigError
from pipelines.errors import DataError, DataWarning
from rundir.layout import RunDirError, disk_full

USER_ERRORS = (ModelConfigError, DataError, RunDirError)


@contextlib.contextmanager
def one_line_errors(program):
    """Run the body; a user error prints `<program>: error: <message>` and exits with status 2.

    A `DataWarning` (unreadable images skipped, an empty class folder) is one line too: `<program>: warning: <message>`.
    """
    shown = warnings.showwarning

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"{program}: warning: {str(message).strip().splitlines()[0]}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line_warning
    try:
        yield
    except USER_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"{program}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if not disk_full(error):
            raise
        where = f" (writing {error.filename})" if getattr(error, "filename", None) else ""
        print(f"{program}: error: no space left on the device{where}; files written whole are kept as they were: "
              "free some space and run the command again", file=sys.stderr)
        sys.exit(2)
    finally:
        warnings.showwarning = shown
