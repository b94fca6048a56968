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
"""

import datetime
import json
import os
import re
import shlex

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


def write_json(run_dir, name, values):
    os.makedirs(run_dir, exist_ok=True)
    tmp = path(run_dir, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(values, f, indent=2, sort_keys=True)
    os.replace(tmp, path(run_dir, name))


def read_json(run_dir, name):
    file = path(run_dir, name)
    if not os.path.isfile(file):
        raise RunDirError(f"{file} is missing: {run_dir} is not a finished adaptune run; pass a directory written by python -m app.train")
    with open(file) as f:
        return json.load(f)


def require_run(run_dir, *names):
    """Check `run_dir` exists and holds `names`; raise RunDirError otherwise."""
    if not os.path.isdir(run_dir):
        raise RunDirError(f"run directory {run_dir} does not exist; pass --run with a directory written by python -m app.train")
    for name in names:
        if not os.path.exists(path(run_dir, name)):
            hint = " (training did not finish: continue it with python -m app.train --resume " + shlex.quote(run_dir) + ")" if os.path.isdir(path(run_dir, BACKUP_DIR)) else ""
            raise RunDirError(f"{run_dir} has no {name}{hint}; pass a finished run written by python -m app.train")
