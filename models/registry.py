"""The modules that register adaptune's Keras objects, imported by `import models`.

Every custom layer, model, loss term and optimizer is registered under the package name
`models.serialization.PACKAGE` when its module is imported; `import models` imports all of them, so
`keras.saving.load_model("RUN/model.keras", safe_mode=True)` works in a fresh Python with the
repository on the path.
"""

import importlib

LAYER_MODULES = (
    "models.preprocessing",
    "models.backbones",
    "models.training_term",
    "models.transfer_trainer",
    "models.split_optimizer",
    "models.regularizers",
    "models.spottune.classifier",
)


def import_all_layers():
    """Import the modules whose custom objects a saved adaptune model may contain (`import models` does it)."""
    for module in LAYER_MODULES:
        importlib.import_module(module)
