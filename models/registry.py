"""Imports every module that registers a Keras layer, so `.keras` files load with safe_mode on."""

import importlib

LAYER_MODULES = (
    "models.preprocessing",
    "models.backbones",
    "models.training_term",
    "models.transfer_trainer",
    "models.spottune.classifier",
    "models.split_optimizer",
)


def import_all_layers():
    """Import the modules whose custom layers a saved adaptune model may contain."""
    for module in LAYER_MODULES:
        importlib.import_module(module)
