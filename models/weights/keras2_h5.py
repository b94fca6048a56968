"""Weight files written by Keras 2 (`model.save_weights("x.h5")`), read without Keras.

Keras 3 refuses the '/' in Keras-2 layer names such as `fire2/squeeze1x1`, so the arrays are read
with h5py and addressed by "<layer name>/<weight name>", e.g. "fire2/squeeze1x1/kernel".
"""

from pathlib import Path

import h5py
import numpy as np

from models.errors import ModelConfigError


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_keras2_h5(path):
    """Arrays of a Keras-2 HDF5 weights file, by "<layer>/<weight>" ("fire2/squeeze1x1/kernel").

    Reads both `save_weights` files and whole-model files (arrays under "model_weights").

    Raises:
        ModelConfigError: not an HDF5 file, or not in the Keras-2 layout.
    """
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ModelConfigError(f"{path.name} is not a readable HDF5 file ({error})") from None
    with handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            raise ModelConfigError(
                f"{path.name} is not a Keras-2 weights file (no 'layer_names' attribute); a Keras 3 file must be "
                "named .weights.h5 or .keras"
            )
        arrays = {}
        for layer_name in (_text(n) for n in group.attrs["layer_names"]):
            layer = group[layer_name]
            for weight_name in (_text(n) for n in layer.attrs.get("weight_names", [])):
                short = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
                arrays[f"{layer_name}/{short}"] = np.asarray(layer[weight_name])
    if not arrays:
        raise ModelConfigError(f"{path.name} holds no weights")
    return arrays
