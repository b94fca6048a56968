"""Networks and training maths: backbones, strategies, layers. Knows nothing of flags or datasets.

Importing the package is cheap (no TensorFlow): the command line reads the registries of strategies
and regularisers before it parses arguments. `models.registry.import_all_layers()` registers every
adaptune Keras object (layers, models, loss terms, the split optimizer) for `.keras` files, so a saved
model loads with safe_mode on after it; `rundir.run.load_keras_model` calls it.
"""
