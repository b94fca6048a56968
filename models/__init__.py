"""Networks and training maths: backbones, strategies, layers. Knows nothing of flags or datasets.

`import models` registers every adaptune Keras object (layers, models, loss terms, the split
optimizer; `models.registry`), so after it `keras.saving.load_model("RUN/model.keras",
safe_mode=True)` works in a fresh Python with the repository on the path.

One exception keeps the command line quick: the verbs under `app/` read the registries of strategies
and regularisers (plain Python, no TensorFlow) to build their `--help`, so when `app` was imported
first the registration waits: the modules a verb imports to build a model register their own
classes, and `rundir.run.load_keras_model` registers them all before it loads a `.keras` file.
"""

import sys as _sys

if "app" not in _sys.modules:
    from models import registry as _registry

    _registry.import_all_layers()
