"""Keras 3 weight files saved from an adaptune classifier: `model.save_weights("x.weights.h5")`
and `model.save("x.keras")`.

Both are read through the classifier structure (`models.classifier`): the stem, blocks and head
go into the backbone, the file's classifier becomes the backbone's `source_classifier` (its class
names are not in the file, so `source_class_names` becomes None).
"""

import re
import warnings
from pathlib import Path

import h5py
import keras

from models.errors import ModelConfigError
from models.weights.state_dict import first_line

_DUMMY_NORMALIZATION = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _mismatch(path, backbone, detail):
    return ModelConfigError(
        f"{Path(path).name} does not match {backbone.name}: {detail}; pass weights saved from a {backbone.name} "
        "classifier"
    )


def _describe_load_error(error):
    """Keras' multi-line load error as a short clause: how many objects failed, and one example."""
    text = str(error)
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    path = re.search(r"Variable path=([^,\s]+)", text)
    if count and shapes and path:
        return f"{count[1]} layers could not be loaded (e.g. {path[1]}: file {shapes[2]} vs model {shapes[1]})"
    if count:
        return f"{count[1]} layers could not be loaded"
    return first_line(error)


def _classifier_units(path, backbone):
    try:
        with h5py.File(path, "r") as handle:
            kernel = handle.get("layers/dense/vars/0")
            if kernel is None:
                raise _mismatch(path, backbone, "no classifier (Dense) layer in the file")
            return int(kernel.shape[-1])
    except OSError as error:
        raise ModelConfigError(f"{Path(path).name} is not a readable weights file ({error})") from None


def _new_classifier(units, feature_dim):
    from models.backbones.base import CLASSIFIER_NAME  # late: models.backbones imports this module

    dense = keras.layers.Dense(units, name=CLASSIFIER_NAME)
    dense.build((None, feature_dim))
    return dense


def _load_weights_h5(backbone, path):
    from models.classifier import assemble_classifier

    units = _classifier_units(path, backbone)
    classifier = _new_classifier(units, backbone.feature_dim)
    saved = backbone.source_classifier
    backbone.source_classifier = classifier
    model = assemble_classifier(backbone, normalization=_DUMMY_NORMALIZATION, use_source_classifier=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as error:
        backbone.source_classifier = saved
        raise _mismatch(path, backbone, _describe_load_error(error)) from None


def _load_keras_model(backbone, path):
    from models import registry
    from models.classifier import split_classifier

    registry.import_all_layers()  # a run's model.keras holds adaptune layers
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for unreadable or unsafe files
        raise ModelConfigError(f"{Path(path).name} could not be loaded as a Keras model ({first_line(error)})") from None
    parts = split_classifier(model)
    sources = [parts.stem, *parts.blocks, parts.head]
    targets = [backbone.stem, *backbone.blocks, backbone.head]
    if len(sources) != len(targets):
        raise _mismatch(path, backbone, f"{len(parts.blocks)} blocks in the file, {len(backbone.blocks)} in the backbone")
    for source, target in zip(sources, targets):
        got = [w.shape for w in source.get_weights()]
        want = [tuple(v.shape) for v in target.weights]
        if got != want:
            raise _mismatch(path, backbone, f"layer {target.name} has weights of shapes {got}, expected {want}")
    for source, target in zip(sources, targets):
        target.set_weights(source.get_weights())
    kernel = parts.classifier.get_weights()
    classifier = _new_classifier(kernel[0].shape[-1], backbone.feature_dim)
    classifier.set_weights(kernel)
    backbone.source_classifier = classifier


def load_keras_weights(backbone, path):
    """Loads a `.weights.h5` or `.keras` file saved from an adaptune classifier into `backbone`.

    Args:
        backbone: a freshly built `Backbone` of the same architecture.
        path: the file.

    Raises:
        ModelConfigError: (one line) unreadable file, or not a classifier on this backbone.
    """
    if Path(path).name.lower().endswith(".keras"):
        _load_keras_model(backbone, path)
    else:
        _load_weights_h5(backbone, path)
    backbone.source_class_names = None
