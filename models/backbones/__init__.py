"""The backbone registry: name -> builder, and `build_backbone`.

Every builder takes `weights` ("default", "none" or a file path) and returns a
`models.backbones.base.Backbone`. A new backbone is a new module plus one line in `BACKBONES`.
"""

import functools

from models.backbones.base import Backbone
from models.backbones.keras_applications import SPECS as KERAS_APPLICATIONS
from models.backbones.keras_applications import build_keras_application
from models.backbones.resnet26 import build_resnet26
from models.backbones.resnet_cifar import build_resnet_cifar
from models.backbones.squeezenet import build_squeezenet1_1
from models.errors import ModelConfigError

BACKBONES = {
    "resnet20": functools.partial(build_resnet_cifar, 20),
    "resnet32": functools.partial(build_resnet_cifar, 32),
    "resnet44": functools.partial(build_resnet_cifar, 44),
    "resnet56": functools.partial(build_resnet_cifar, 56),
    "resnet26": build_resnet26,
    "squeezenet1_1": build_squeezenet1_1,
    **{name: functools.partial(build_keras_application, name) for name in KERAS_APPLICATIONS},
}
DEFAULT_BACKBONE = "resnet20"


def recipe_of(name):
    """The training settings backbone `name` declares for its pretrained weights ({} when none), without building it."""
    if name in KERAS_APPLICATIONS:
        return dict(KERAS_APPLICATIONS[name]["recipe"])
    return {}


def build_backbone(name, weights="default"):
    """Builds the backbone `name` with its weights.

    Args:
        name: a key of `BACKBONES` (e.g. "resnet20", "resnet26", "squeezenet1_1", "resnet50").
        weights: "default" (the backbone's known pretrained file, searched on
            `models.weights.weights_search_path()`), "none" (random init), or a path to a weight
            file (.npz / .pth / .pt PyTorch state dict, Keras-2 .h5, or a .weights.h5 / .keras file
            saved from an adaptune classifier; which ones depends on the backbone).

    Returns:
        a `Backbone`.

    Raises:
        ModelConfigError: (one line) unknown name, weights file missing or not matching.
    """
    if name not in BACKBONES:
        raise ModelConfigError(f"unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](weights=weights)


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "build_backbone", "recipe_of"]
