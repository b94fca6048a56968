"""Reading weight files into backbones: PyTorch state dicts (.npz, .pth/.pt/.t7), Keras-2 HDF5
files, Keras 3 weights files (.weights.h5, .keras), and the search path for default files.

`models` reads files only here; the backbones say which array goes where.
"""

from pathlib import Path

from models.errors import ModelConfigError
from models.weights.keras2_h5 import read_keras2_h5
from models.weights.search import find_weights_file, resolve_weights, weights_search_path
from models.weights.state_dict import TORCH_SUFFIXES, assign_state_dict, read_state_dict

FORMAT_DESCRIPTIONS = {
    "npz": ".npz (PyTorch state dict saved with numpy)",
    "torch": ".pth/.pt/.t7 (PyTorch state dict)",
    "keras2_h5": ".h5 (Keras-2 weights)",
    "keras": ".weights.h5/.keras (adaptune classifier)",
}


def weights_format(path, backbone_name=None, allowed=tuple(FORMAT_DESCRIPTIONS)):
    """The kind of weight file `path` is, by its name: "npz", "torch", "keras2_h5" or "keras".

    Raises:
        ModelConfigError: unknown suffix, or a kind this backbone cannot read (`allowed`).
    """
    name = Path(path).name.lower()
    if name.endswith(".weights.h5") or name.endswith(".keras"):
        kind = "keras"
    elif name.endswith(".npz"):
        kind = "npz"
    elif name.endswith(TORCH_SUFFIXES):
        kind = "torch"
    elif name.endswith((".h5", ".hdf5")):
        kind = "keras2_h5"
    else:
        kind = None
    if kind not in allowed:
        accepted = ", ".join(FORMAT_DESCRIPTIONS[k] for k in allowed)
        raise ModelConfigError(
            f"{Path(path).name}: {backbone_name or 'this backbone'} reads weights from {accepted}"
        )
    return kind


__all__ = [
    "assign_state_dict",
    "find_weights_file",
    "read_keras2_h5",
    "read_state_dict",
    "resolve_weights",
    "weights_format",
    "weights_search_path",
]
