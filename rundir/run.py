"""A finished run directory, read: its config, dataset description and metrics, and its `.keras` files."""

import dataclasses
import os
import zipfile

from rundir import layout as rd
from rundir.config import TrainConfig


@dataclasses.dataclass
class Run:
    """A finished run directory, read.

    Attributes:
        directory: the run directory.
        config: its `rundir.config.TrainConfig`.
        dataset: dataset.json (class_names, split_sizes, image_size, normalization).
        metrics: metrics.json.
    """

    directory: str
    config: object
    dataset: dict
    metrics: dict

    @property
    def strategy(self):
        return self.config.strategy

    @property
    def image_size(self):
        return int(self.dataset["image_size"])

    @property
    def class_names(self):
        return list(self.dataset["class_names"])

    def path(self, name):
        return rd.path(self.directory, name)


def open_run(directory):
    """Reads a finished run directory; raises `rundir.layout.RunDirError` (one line) when it is not one."""
    rd.require_run(directory, rd.CONFIG_FILE, rd.DATASET_FILE, rd.MODEL_FILE, rd.METRICS_FILE)
    try:
        config = TrainConfig.load(rd.path(directory, rd.CONFIG_FILE))
    except (ValueError, TypeError) as error:
        raise rd.RunDirError(f"{rd.path(directory, rd.CONFIG_FILE)} is not a valid adaptune config ({_first_line(error)})") from None
    dataset = rd.read_json(directory, rd.DATASET_FILE)
    missing = [key for key in ("image_size", "class_names") if not dataset.get(key)]
    if missing:
        raise rd.RunDirError(f"{rd.path(directory, rd.DATASET_FILE)} has no {', '.join(missing)}; re-run python -m app.train")
    return Run(directory, config, dataset, rd.read_json(directory, rd.METRICS_FILE))


def load_keras_model(path):
    """Loads an adaptune `.keras` file with safe_mode on; RunDirError (one line) if it cannot be read."""
    import keras

    from models import registry

    registry.import_all_layers()

    if not os.path.isfile(path):
        raise rd.RunDirError(f"{path} is missing; pass a finished run written by python -m app.train")
    if not _complete_archive(path):
        raise rd.RunDirError(
            f"{path} is truncated or corrupt (not a complete .keras archive); copy the run again, or train it again with python -m app.train"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # a truncated or foreign file: say which, in one line
        raise rd.RunDirError(f"{path} could not be loaded as an adaptune model ({_first_line(error)})") from None


def _complete_archive(path):
    """True when `path` is a whole zip archive (a .keras file is one) whose members all read back."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
