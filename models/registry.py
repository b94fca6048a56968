"""The modules that register adaptune's Keras objects, imported by `import_all_layers()`.

Every custom layer, model, loss term and optimizer is registered under the package name
`models.serialization.PACKAGE` when its module is imported; `import_all_layers()` imports all of
them, so after it `keras.saving.load_model("RUN/model.keras", safe_mode=True)` works in a fresh
Python with the repository on the path. `import models` calls it, except under the command-line
verbs (`app/` imported first), which call it when they load or build a model, so that `--help`
answers without TensorFlow.
"""

import importlib

LAYER_MODULES = (
    "models.preprocessing",
    "models.backbones",
    "models.training_term",
    "models.transfer_trainer",
    "models.split_optimizer",
    "models.regularizers.delta",
    "models.regularizers.group_lasso_sp",
    "models.regularizers.l1_sp",
    "models.regularizers.l2_sp",
    "models.regularizers.weight_decay",
    "models.spottune.classifier",
    "models.adafilter.classifier",
    "models.adafilter.residual_shortcut",
    "models.transtailor.filter_scale",
)


def import_all_layers():
    """Import the modules whose custom objects a saved adaptune model may contain (registers them with Keras)."""
    for module in LAYER_MODULES:
        importlib.import_module(module)
