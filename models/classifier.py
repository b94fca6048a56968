"""A backbone assembled into a classifier, and taken apart again.

    image [0, 255] -> "normalization" -> "stem" -> "block_01" ... "block_NN" -> "head"
        [-> "dropout"] -> "classifier"

The parts are the backbone's own layers (shared, not copied), nested under fixed names so that a
model loaded from a `.keras` file can be split again with `split_classifier`.
"""

import typing

import keras

from models.backbones.base import CLASSIFIER_NAME, HEAD_NAME, NORMALIZATION_NAME, STEM_NAME, block_name
from models.errors import ModelConfigError
from models.preprocessing import ChannelNormalization

DROPOUT_NAME = "dropout"


class ClassifierParts(typing.NamedTuple):
    """The named parts of an assembled classifier, in the order data flows through them."""

    normalization: keras.layers.Layer
    stem: keras.layers.Layer
    blocks: list
    head: keras.layers.Layer
    classifier: keras.layers.Layer


def assemble_classifier(
    backbone,
    num_classes=None,
    normalization=None,
    dropout=0.0,
    use_source_classifier=False,
    name=None,
):
    """Builds the functional classifier `image -> normalization -> stem -> blocks -> head -> classifier`.

    Args:
        backbone: a `models.backbones.base.Backbone`. Its layers are used as they are (shared).
        num_classes: size of the new Dense classifier. Ignored (may be None) when
            `use_source_classifier` is True.
        normalization: keyword arguments of `ChannelNormalization` (mean, std, scale,
            channel_order), or None for the backbone's `source_normalization`. One of the two is
            required.
        dropout: rate of a Dropout before the classifier (none when 0).
        use_source_classifier: use the backbone's pretrained classifier (e.g. the CIFAR-10 head)
            instead of a new Dense layer.
        name: model name; defaults to "<backbone>_classifier".

    Returns:
        a `keras.Model` taking float RGB images in [0, 255] of any size, `[batch, None, None, 3]`,
        and returning logits `[batch, num_classes]`.

    Raises:
        ModelConfigError: no normalization available, no source classifier, bad num_classes.
    """
    # === Layers ===
    norm_kwargs = normalization if normalization is not None else backbone.source_normalization
    if norm_kwargs is None:
        raise ModelConfigError(
            f"{backbone.name} has no source normalization: pass the dataset's mean and std as normalization"
        )
    norm_layer = ChannelNormalization(**dict(norm_kwargs), name=NORMALIZATION_NAME)
    if use_source_classifier:
        if backbone.source_classifier is None:
            raise ModelConfigError(f"{backbone.name} (weights: {backbone.weights_source}) has no source classifier")
        classifier = backbone.source_classifier
        if classifier.name != CLASSIFIER_NAME:
            raise ModelConfigError(f"source classifier of {backbone.name} must be named {CLASSIFIER_NAME!r}")
    else:
        if num_classes is None or int(num_classes) < 1:
            raise ModelConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        classifier = keras.layers.Dense(int(num_classes), name=CLASSIFIER_NAME)

    # === Functional Model ===
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = norm_layer(inputs)
    x = backbone.stem(x)
    for block in backbone.blocks:
        x = block(x)
    outputs = classify(backbone.head(x), classifier, dropout)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_classifier")


def classify(features, classifier, dropout=0.0):
    """The end of every adaptune network: head features [-> Dropout named "dropout"] -> `classifier`."""
    if dropout and dropout > 0:
        features = keras.layers.Dropout(float(dropout), name=DROPOUT_NAME)(features)
    return classifier(features)


def split_classifier(model):
    """The parts of an assembled (possibly saved and reloaded) classifier, found by name.

    Args:
        model: a model built by `assemble_classifier`, or loaded from its `.keras` file.

    Returns:
        `ClassifierParts(normalization, stem, blocks, head, classifier)`; `blocks` is the list of
        layers block_01, block_02, ... in order. A Dropout, if any, is `model.get_layer("dropout")`.

    Raises:
        ModelConfigError: a part is missing (the model was not built by `assemble_classifier`).
    """
    names = {layer.name: layer for layer in model.layers}
    missing = [n for n in (NORMALIZATION_NAME, STEM_NAME, block_name(0), HEAD_NAME, CLASSIFIER_NAME) if n not in names]
    if missing:
        raise ModelConfigError(
            f"model {model.name!r} is not an assembled classifier: no layer named {', '.join(missing)}"
        )
    blocks = []
    while block_name(len(blocks)) in names:
        blocks.append(names[block_name(len(blocks))])
    return ClassifierParts(
        normalization=names[NORMALIZATION_NAME],
        stem=names[STEM_NAME],
        blocks=blocks,
        head=names[HEAD_NAME],
        classifier=names[CLASSIFIER_NAME],
    )


def call_site(network, name):
    """(input tensor, output tensor) of layer `name` where `network` calls it.

    `network.get_layer(name).output` is the layer's own output only for plain layers: for a
    functional sub-model (the keras.applications blocks and heads) it is the sub-model's internal
    tensor, which is not connected to `network`'s input. The node of `network`'s graph is.

    Raises:
        ModelConfigError: `network` does not call a layer named `name` (exactly once).
    """
    layer = network.get_layer(name)
    nodes = [node for depth in network._nodes_by_depth.values() for node in depth if node.operation is layer]
    if len(nodes) != 1:
        raise ModelConfigError(f"{network.name} calls {name!r} {len(nodes)} times; expected once")
    node = nodes[0]
    inputs = node.input_tensors[0] if len(node.input_tensors) == 1 else list(node.input_tensors)
    outputs = node.output_tensors[0] if len(node.output_tensors) == 1 else list(node.output_tensors)
    return inputs, outputs
