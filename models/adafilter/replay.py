"""Replaying a block into a larger functional graph, layer by layer, with some layers swapped.

AdaFilter and TransTailor rewrite the inside of every block: AdaFilter swaps each convolution (and the
BatchNorm after it) for a gated pair, TransTailor inserts scales and removes channels. Both need the
block's computation as a sequence of layer calls in the outer network's graph, which this module gives
for the two kinds of blocks adaptune has: `BasicBlock` (CIFAR ResNets, Decathlon ResNet-26) and
functional sub-models (the keras.applications backbones: MobileNetV2, MobileNet, ResNet50).
"""

import keras

from models.backbones.basic_block import BasicBlock
from models.errors import ModelConfigError

CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def graph_nodes(model):
    """The nodes of a functional `model` in topological order (inputs first)."""
    depths = sorted(model._nodes_by_depth, reverse=True)
    return [node for depth in depths for node in model._nodes_by_depth[depth]]


def consumers(model):
    """{id(tensor): [nodes that read it]} inside `model`."""
    readers = {}
    for node in graph_nodes(model):
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), []).append(node)
    return readers


def renamed_clone(layer, name):
    """A copy of `layer` (same config and weights) called `name`."""
    config = layer.get_config()
    config["name"] = name
    clone = layer.__class__.from_config(config)
    return clone


def conv_bn_pairs(block):
    """[(conv, bn or None)] of a block's convolutions, each with the BatchNorm that alone reads its output."""
    if isinstance(block, BasicBlock):
        return [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    readers = consumers(block)
    pairs = []
    for node in graph_nodes(block):
        if isinstance(node.operation, CONV_TYPES):
            users = readers.get(id(node.output_tensors[0]), [])
            bn = users[0].operation if len(users) == 1 and isinstance(users[0].operation, keras.layers.BatchNormalization) else None
            pairs.append((node.operation, bn))
    return pairs


def replay_block(block, x, prefix, conv_fn):
    """The output tensor of `block` applied to tensor `x`, each conv + BatchNorm pair replaced by `conv_fn`.

    Args:
        block: a `BasicBlock` or a functional sub-model with one input and one output.
        x: the input tensor in the outer graph.
        prefix: prefix of the names of the layers created for the block (e.g. "block_03").
        conv_fn: `conv_fn(x, conv, bn, index) -> tensor`, the replacement of `bn(conv(x))` (bn may be
            None); index counts the block's convolutions from 0.

    Returns:
        the block's output tensor.

    Raises:
        ModelConfigError: a block of another kind (a custom layer other than `BasicBlock`).
    """
    if isinstance(block, BasicBlock):
        return _replay_basic_block(block, x, prefix, conv_fn)
    if isinstance(block, keras.Model) and hasattr(block, "_nodes_by_depth"):
        return _replay_functional(block, x, prefix, conv_fn)
    raise ModelConfigError(
        f"block {block.name} is a {type(block).__name__}: only BasicBlock and functional blocks can be rewritten "
        "filter by filter (resnet20..56, resnet26, mobilenet_v2, mobilenet, resnet50)"
    )


def _replay_basic_block(block, x, prefix, conv_fn):
    from models.adafilter.residual_shortcut import ResidualShortcut

    inputs = x
    if block.strides > 1:  # BasicBlock pads explicitly, as PyTorch does
        x = keras.layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
    x = conv_fn(x, block.conv1, block.bn1, 0)
    x = keras.layers.ReLU(name=f"{prefix}_relu1")(x)
    x = conv_fn(x, block.conv2, block.bn2, 1)
    shortcut = ResidualShortcut(block.filters, block.strides, block.shortcut, name=f"{prefix}_shortcut")(inputs)
    x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def _replay_functional(block, x, prefix, conv_fn):
    readers = consumers(block)
    values = {id(block.inputs[0]): x}
    skipped = set()
    index = 0
    for node in graph_nodes(block):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer) or id(node) in skipped:
            continue
        if isinstance(layer, CONV_TYPES):
            users = readers.get(id(node.output_tensors[0]), [])
            bn = None
            if len(users) == 1 and isinstance(users[0].operation, keras.layers.BatchNormalization):
                bn = users[0].operation
                skipped.add(id(users[0]))
                end = users[0].output_tensors[0]
            else:
                end = node.output_tensors[0]
            values[id(end)] = conv_fn(values[id(node.input_tensors[0])], layer, bn, index)
            index += 1
            continue
        clone = renamed_clone(layer, f"{prefix}_{layer.name}")
        args, kwargs = node.arguments.fill_in(values)
        outputs = clone(*args, **kwargs)
        if layer.weights:
            clone.set_weights(layer.get_weights())
        for tensor, value in zip(node.output_tensors, keras.tree.flatten(outputs)):
            values[id(tensor)] = value
    return values[id(block.outputs[0])]
