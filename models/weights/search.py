"""Where default (pretrained) weight files are looked for, and how a `weights` argument resolves."""

import os
from pathlib import Path

from models.errors import ModelConfigError

WEIGHTS_DIR_ENV = "ADAPTUNE_WEIGHTS_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def keras_cache_dir():
    """The folder where `keras.utils.get_file` caches model files: $KERAS_HOME/models or ~/.keras/models."""
    keras_home = os.environ.get("KERAS_HOME")
    if keras_home:
        return Path(keras_home) / "models"
    return Path.home() / ".keras" / "models"


def weights_search_path():
    """Folders searched for default weight files, in order.

    $ADAPTUNE_WEIGHTS_DIR (when set), <repo>/assets/weights, <repo>/../shared/weights, the Keras
    model cache (~/.keras/models).
    """
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs += [_REPO_ROOT / "assets" / "weights", _REPO_ROOT.parent / "shared" / "weights", keras_cache_dir()]
    return dirs


def find_weights_file(relative_paths, folders=None):
    """The first existing file among `dir / rel` and `dir / basename(rel)`, for each folder of the search path.

    Args:
        relative_paths: file names, optionally under a sub-folder ("resnet-cifar10/resnet20.npz").
        folders: the folders to look in (default: the whole `weights_search_path()`).

    Returns:
        a `Path`, or None when no folder holds the file.
    """
    for folder in weights_search_path() if folders is None else folders:
        for rel in relative_paths:
            for candidate in (folder / rel, folder / Path(rel).name):
                if candidate.is_file():
                    return candidate
    return None


def resolve_weights(weights, backbone_name, default_files, missing_hint=None, fallback=None):
    """Turns a `weights` argument into a file path, or None for random initialisation.

    Args:
        weights: "default" (search `default_files` on the search path), "none" / None (random
            init), or a path to a weight file.
        backbone_name: used in error messages.
        default_files: relative paths of the default file; empty when the backbone has none.
        missing_hint: the one-line error message when `weights="default"` and `default_files`
            is empty.
        fallback: called with the one-line "not found" message when no default file is on the
            search path (e.g. a download that needs the network); returns a path or raises.

    Raises:
        ModelConfigError: default file not found, no default file, or the path does not exist.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "default":
        if not default_files:
            raise ModelConfigError(
                missing_hint or f"{backbone_name} has no default weights: pass --weights PATH or --weights none"
            )
        found = find_weights_file(default_files)
        if found is None:
            folders = ", ".join(str(d) for d in weights_search_path())
            message = (
                f"default weights of {backbone_name} not found: put {Path(default_files[0]).name} in one of "
                f"{folders} (or set ${WEIGHTS_DIR_ENV}), pass --weights PATH, or --weights none for random init"
            )
            if fallback is not None:
                return Path(fallback(message))
            raise ModelConfigError(message)
        return found
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelConfigError(
            f"weights file {path} not found for {backbone_name}: pass an existing file, 'default' or 'none'"
        )
    return path
