"""Networks and training maths: backbones, strategies, layers. Knows nothing of flags or datasets.

Importing the package registers every adaptune Keras object (layers, models, loss terms, the split
optimizer) for `.keras` files, so a saved model loads with safe_mode on after `import models`.
"""

from models import registry as _registry

_registry.import_all_layers()
