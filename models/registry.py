"""The modules that register adaptune's Keras objects, imported by `import_all_layers()`.

Every custom layer, model, loss term and optimizer is registered under the package name
`models.serialization.PACKAGE` when its module is imported; `import_all_layers()` imports all of
them, so after it `keras.saving.load_model("RUN/model.keras", safe_mode=True)` works in a fresh
Python with the repository on the path. `import models` calls it, except under the command-line
verbs (`app/` imported first), which call it when they load or build a model, so that `--help`
answers without TensorFlow.
"""

import importlib
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
REGISTERS = "register_keras_serializable"


def registering_modules():
    """Every module under `models/` whose source registers a Keras object, sorted (found, not listed by hand)."""
    found = []
    for source in MODELS_DIR.rglob("*.py"):
        if source.resolve() == Path(__file__).resolve() or REGISTERS not in source.read_text(encoding="utf-8"):
            continue
        parts = source.relative_to(MODELS_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append(".".join(("models",) + parts))
    return sorted(found)


def import_all_layers():
    """Import every module whose custom objects a saved adaptune model may contain (registers them with Keras)."""
    for module in registering_modules():
        importlib.import_module(module)
