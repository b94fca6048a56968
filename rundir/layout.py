"""The run directory: the contract between `train`, `evaluate` and `export`.

Every file a run directory may hold is named here (`FILES`) or declared by the run's strategy and
regulariser (their `files`); `run_files` gives the whole list and `declared_path` refuses a name
that is not on it, so nothing writes a file the contract does not name. The core files:

    <run>/config.json      everything needed to rebuild the run (TrainConfig)
    <run>/model.keras      the trained model (loads with safe_mode on)
    <run>/metrics.json     accuracy per split, images per split, training images/s, ...
    <run>/history.csv      per-epoch losses and metrics
    <run>/logs/            TensorBoard logs (train/ and validation/)
    <run>/backup/          resume state while training runs (removed when it finishes)
    <run>/dataset.json     class names and split sizes of the data the run saw
    <run>/w0.npz, regularization.json, distance_to_w0.png, fisher.npz(.json): the regularisation glue
    <run>/run.lock         locked (fcntl.flock) by the one process writing the run; holds its pid
    <run>/sample.npz       verification and calibration images, for evaluate and export without the data
"""

import contextlib
import csv
import datetime
import fcntl
import json
import os
import tempfile
import re
import shlex
import shutil

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
DATASET_FILE = "dataset.json"
LOGS_DIR = "logs"
BACKUP_DIR = "backup"
W0_FILE = "w0.npz"
FISHER_FILE = "fisher.npz"
REGULARIZATION_FILE = "regularization.json"
DISTANCE_PLOT = "distance_to_w0.png"
LOCK_FILE = "run.lock"
SAMPLE_FILE = "sample.npz"

FILES = {
    CONFIG_FILE: "everything needed to rebuild the run (TrainConfig)",
    MODEL_FILE: "the trained network (loads with safe_mode on)",
    METRICS_FILE: "accuracy per split, images, images/s, parameters, history, and the strategy's metrics",
    HISTORY_FILE: "per-epoch losses and metrics",
    DATASET_FILE: "class names, split sizes, image size and normalisation of the data the run saw",
    LOGS_DIR: "TensorBoard logs",
    BACKUP_DIR: "the resume checkpoint while training runs",
    W0_FILE: "the starting point w0 of every trainable shared weight",
    FISHER_FILE: "the diagonal Fisher at w0 (regularisers that need it)",
    FISHER_FILE + ".json": "how the Fisher was estimated",
    REGULARIZATION_FILE: "the regulariser's resolved settings and what its estimates cost",
    DISTANCE_PLOT: "||w - w0|| per block at the end of the run",
    LOCK_FILE: "locked by the process writing the run (its pid inside); released when that process ends",
    SAMPLE_FILE: "verification and calibration images (uint8) for evaluate and export when the data has moved",
}


class RunDirError(ValueError):
    """A run directory is missing or incomplete. One line naming the problem and the fix."""


def new_run_dir(config, root="runs"):
    """A fresh, unique directory name under `root` describing the run."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = config.dataset or "default"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stamp}-{dataset}-{config.backbone}-{config.strategy}")
    path = os.path.join(root, name)
    suffix = 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join(root, f"{name}-{suffix}")
    return path


def path(run_dir, *names):
    return os.path.join(run_dir, *names)


def run_files(strategy=None, regularizer=None):
    """{name: description} of every file a run of `strategy` with `regularizer` may write."""
    files = dict(FILES)
    for method in (strategy, regularizer):
        files.update(getattr(method, "files", None) or {})
    return files


def declared_path(run_dir, name, files):
    """`path(run_dir, name)` for a name the contract declares (top-level entry of `name` in `files`), else ValueError."""
    top = name.replace(os.sep, "/").split("/")[0]
    if top not in files:
        raise ValueError(f"{name!r} is not a declared file of the run directory; declare it in the method's `files`")
    return path(run_dir, name)


# A temporary file of `replacing` (and of older versions: w0.npz.tmp.npz, config.json.tmp).
_TEMPORARY = re.compile(r"\.tmp(-\d+)?(\.[A-Za-z0-9_.]+)?$")


@contextlib.contextmanager
def replacing(file):
    """Write `file` whole or not at all.

    The body writes the path it is given: a temporary file beside `file` with the same extension
    (Keras and NumPy want theirs). When the body returns, that file replaces `file` in one step
    (os.replace); when it fails, the temporary file is removed and `file` is as it was.
    """
    folder, name = os.path.split(file)
    extension = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    tmp = os.path.join(folder, f"{name}.tmp-{os.getpid()}{extension}")
    try:
        yield tmp
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def staging(run_dir):
    """A temporary folder in `run_dir` for the files of one step (a strategy's `finish`): when the body
    returns, each file it holds replaces its namesake in `run_dir` in one rename; when it fails, the
    folder is removed and `run_dir` is as it was. Yields the folder."""
    folder = path(run_dir, f".staging.tmp-{os.getpid()}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    try:
        yield folder
        _move_into(folder, run_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _move_into(source, target):
    """Every file under `source` renamed to the same place under `target` (folders merged, not replaced)."""
    for name in sorted(os.listdir(source)):
        entry, destination = os.path.join(source, name), os.path.join(target, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            os.makedirs(destination, exist_ok=True)
            _move_into(entry, destination)
        else:
            os.replace(entry, destination)


def remove_leftovers(run_dir):
    """Remove the temporary files (and staging folders) an interrupted write left in `run_dir` and its backup/
    (call it holding the lock)."""
    removed = []
    for folder in (run_dir, path(run_dir, BACKUP_DIR)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            entry = os.path.join(folder, name)
            if not _TEMPORARY.search(name):
                continue
            if os.path.isfile(entry):
                os.remove(entry)
            elif os.path.isdir(entry) and name.startswith(".staging."):
                shutil.rmtree(entry)
            else:
                continue
            removed.append(entry)
    return removed


def disk_full(error):
    """True when `error` (or what caused it) is a full disk or an exhausted quota (ENOSPC, EDQUOT)."""
    import errno

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def write_json(run_dir, name, values):
    """Write <run>/<name> as JSON, whole or not at all (`replacing`)."""
    os.makedirs(run_dir, exist_ok=True)
    with replacing(path(run_dir, name)) as tmp, open(tmp, "w") as f:
        json.dump(values, f, indent=2, sort_keys=True)


def read_history(file):
    """The rows of a history.csv ([{"epoch": int, key: float or None}, ...]); [] when there is none."""
    if not os.path.isfile(file):
        return []
    rows = []
    with open(file, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch", "").strip().isdigit():
                continue  # a second header or a torn line of an older writer
            rows.append({key: _number(value) for key, value in row.items() if key})
    return rows


def write_history(file, rows):
    """Write history.csv whole (`replacing`): a header "epoch,<keys sorted>", one row per epoch."""
    keys = sorted({key for row in rows for key in row} - {"epoch"})
    with replacing(file) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for row in rows:
            writer.writerow([row["epoch"], *("" if row.get(key) is None else row[key] for key in keys)])


def _number(text):
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        return None


def check_writable(run_dir, flag="--out", make_parents=False):
    """Raise RunDirError (one line) unless files can be created in `run_dir`: call it before any data is read.

    The parent folder must exist (with `make_parents`, it is created: the default runs/ folder); the
    check creates and removes a small file, so a read-only or full file system is found here.
    """
    target = os.path.abspath(run_dir)
    if os.path.exists(target) and not os.path.isdir(target):
        raise RunDirError(f"{flag} {run_dir} is a file, not a directory; choose another {flag}")
    folder = target if os.path.isdir(target) else os.path.dirname(target)
    if make_parents:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise RunDirError(f"{flag} {run_dir}: cannot create {folder} ({error.strerror}); choose another {flag}") from None
    if not os.path.isdir(folder):
        hint = "it is a file" if os.path.exists(folder) else "it does not exist"
        raise RunDirError(f"{flag} {run_dir}: its parent folder {folder} is missing ({hint}); create it with mkdir -p {shlex.quote(folder)} or choose another {flag}")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".adaptune-write-check-")
        try:
            os.write(handle, b"x")
        finally:
            os.close(handle)
            os.remove(probe)
    except OSError as error:
        raise RunDirError(f"{flag} {run_dir}: {folder} is not writable ({error.strerror}); choose another {flag} or fix its permissions") from None


_HELD = {}  # run directory -> file descriptor of its lock, for the life of the process


def lock_run(run_dir, flag="--out"):
    """Lock `run_dir` for this process (creating it): fcntl.flock on <run>/run.lock, which then holds our pid.

    The lock goes with the process: the kernel releases it when the process ends, killed or not.
    A second process gets RunDirError (one line) naming the holder's pid. Call it before any data is read.
    """
    key = os.path.realpath(run_dir)
    if key in _HELD:
        return _HELD[key]
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(path(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunDirError(f"{flag} {run_dir}: cannot create its lock file ({error.strerror}); choose another {flag}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(
            f"{run_dir} is in use by another adaptune process (pid {holder}); wait for it to finish, stop it (kill {holder}), or choose another {flag}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd
    return fd


def unlock_run(run_dir):
    """Release the lock `lock_run` took (the process ending does it too)."""
    fd = _HELD.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def locked_run(run_dir, flag="--out"):
    """`lock_run` for the body; a directory it created holding nothing but the lock file is removed on failure."""
    created = not os.path.isdir(run_dir)
    lock_run(run_dir, flag)
    try:
        yield run_dir
    except BaseException:
        if created and os.listdir(run_dir) == [LOCK_FILE]:
            os.remove(path(run_dir, LOCK_FILE))
            os.rmdir(run_dir)
        raise
    finally:
        unlock_run(run_dir)


def read_json(run_dir, name):
    file = path(run_dir, name)
    if not os.path.isfile(file):
        raise RunDirError(f"{file} is missing: {run_dir} is not a finished adaptune run; pass a directory written by python -m app.train")
    try:
        with open(file) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{file} is truncated or corrupt ({getattr(error, 'msg', error)}); copy the run again, or train it again with python -m app.train") from None


def require_run(run_dir, *names):
    """Check `run_dir` exists and holds `names`; raise RunDirError otherwise."""
    if not os.path.isdir(run_dir):
        raise RunDirError(f"run directory {run_dir} does not exist; pass --run with a directory written by python -m app.train")
    for name in names:
        if not os.path.exists(path(run_dir, name)):
            hint = " (training did not finish: continue it with python -m app.train --resume " + shlex.quote(run_dir) + ")" if os.path.isdir(path(run_dir, BACKUP_DIR)) else ""
            raise RunDirError(f"{run_dir} has no {name}{hint}; pass a finished run written by python -m app.train")
