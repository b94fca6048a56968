"""The AdaFilter network: every convolution inside the blocks becomes a `GatedConv`, gated by one shared
recurrent gate network.

    image -> normalization -> stem -> [block_01 .. block_NN, replayed layer by layer] -> head -> classifier
                                         |  each conv + BN:  GatedConv([x, g_l])
                                         |  g_l = BinaryGate(Dense_l^out(LSTM(Dense_l^in(GAP(x)), state)))

Which convolutions are gated (our reading; the paper does not say): every convolution inside the
backbone's blocks (both of a BasicBlock's, the expand / depthwise / project convolutions of MobileNetV2,
the shortcut convolutions of ResNet50). The stem and the head are fine-tuned as in `finetune` (with the
run's `--bn`), the new classifier trains. Gate polarity: g = 1 is the fine-tuned filter.

The network is one flat functional graph (the shared recurrent cell runs through every block, so the
blocks cannot stay separate sub-models); its layers are named `block_NN_...` after the block they come
from. Method page: docs/methods/adafilter.md.
"""

import keras

from models.adafilter.binary_gate import BinaryGate
from models.adafilter.gate_network import RecurrentGateCell, ZeroState
from models.adafilter.gated_conv import GatedConv
from models.adafilter.replay import conv_bn_pairs, replay_block
from models.backbones.base import CLASSIFIER_NAME, NORMALIZATION_NAME, block_name
from models.classifier import classify
from models.errors import ModelConfigError
from models.preprocessing import ChannelNormalization

GATE_PREFIX = "adafilter_"  # every layer of the gate network; its variables get their own optimizer
DEFAULT_HIDDEN = 32
DEFAULT_EMBEDDING = 16


def gate_layer_name(index):
    return f"{GATE_PREFIX}gate_{index + 1:03d}"


def build_adafilter_classifier(
    backbone,
    num_classes,
    normalization=None,
    bn="train",
    hidden=DEFAULT_HIDDEN,
    embedding=DEFAULT_EMBEDDING,
    dropout=0.0,
    name=None,
):
    """An AdaFilter classifier on `backbone`.

    Args:
        backbone: a `Backbone` whose blocks are `BasicBlock`s or functional sub-models; its stem and head
            are used as they are (shared), its blocks' convolutions are copied twice into `GatedConv`s.
        num_classes: size of the new classifier.
        normalization: `ChannelNormalization` keyword arguments (None: the backbone's source ones).
        bn: the run's `--bn`, BatchNorm of the parts that train (stem, head, fine-tuned paths).
        hidden: LSTM state size of the gate network (our reading; the paper gives none).
        embedding: size of the per-layer input projection (our reading).
        dropout: rate of a Dropout before the classifier.

    Returns:
        a `keras.Model`, images `[batch, None, None, 3]` in [0, 255] -> logits.
    """
    from models.strategies.freezing import set_trainable

    norm_kwargs = normalization if normalization is not None else backbone.source_normalization
    if norm_kwargs is None:
        raise ModelConfigError(f"{backbone.name} has no source normalization: pass the dataset's mean and std")
    for block in backbone.blocks:
        conv_bn_pairs_or_fail(block)

    # === Layers ===
    cell = RecurrentGateCell(hidden, name=f"{GATE_PREFIX}cell")
    classifier = keras.layers.Dense(int(num_classes), name=CLASSIFIER_NAME)
    gated = []

    # === Functional Model ===
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = ChannelNormalization(**dict(norm_kwargs), name=NORMALIZATION_NAME)(inputs)
    x = backbone.stem(x)
    state = {"h": ZeroState(hidden, name=f"{GATE_PREFIX}zero_h")(x), "c": ZeroState(hidden, name=f"{GATE_PREFIX}zero_c")(x)}

    for b, block in enumerate(backbone.blocks):
        prefix = block_name(b)

        def gated_conv(x, conv, bn_layer, index, prefix=prefix):
            number = len(gated)
            pooled = keras.layers.GlobalAveragePooling2D(name=f"{GATE_PREFIX}pool_{number + 1:03d}")(x)
            embedded = keras.layers.Dense(embedding, name=f"{GATE_PREFIX}in_{number + 1:03d}")(pooled)
            state["h"], state["c"] = cell([embedded, state["h"], state["c"]])
            filters = _filters(conv, x)
            logits = keras.layers.Dense(filters, name=f"{GATE_PREFIX}out_{number + 1:03d}")(state["h"])
            gate = BinaryGate(name=gate_layer_name(number))(logits)
            layer = GatedConv(
                keras.layers.serialize(conv),
                keras.layers.serialize(bn_layer) if bn_layer is not None else None,
                finetuned_bn=bn,
                source=f"{block.name}/{conv.name}",
                name=f"{prefix}_{conv.name}_gated",
            )
            y = layer([x, gate])
            layer.copy_source_weights(conv, bn_layer)
            gated.append(layer)
            return y

        x = replay_block(block, x, prefix, gated_conv)
    outputs = classify(backbone.head(x), classifier, dropout)
    model = keras.Model(inputs, outputs, name=name or f"{backbone.name}_adafilter")

    # trainable flags: stem, head, classifier and the replayed weight layers as in fine-tuning; the
    # GatedConv layers set their own (pretrained path frozen) and are left alone.
    for layer in model.layers:
        if not isinstance(layer, GatedConv):
            set_trainable(layer, True, bn)
    return model


def conv_bn_pairs_or_fail(block):
    pairs = conv_bn_pairs(block) if _replayable(block) else []
    if not pairs:
        raise ModelConfigError(
            f"AdaFilter gates convolutions inside the blocks; block {block.name} ({type(block).__name__}) has none it can "
            "rewrite: use a backbone of BasicBlocks or keras.applications blocks (resnet20..56, resnet26, mobilenet_v2, "
            "mobilenet, resnet50)"
        )
    return pairs


def _replayable(block):
    from models.backbones.basic_block import BasicBlock

    return isinstance(block, BasicBlock) or (isinstance(block, keras.Model) and hasattr(block, "_nodes_by_depth"))


def _filters(conv, x):
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        return int(x.shape[-1]) * int(conv.depth_multiplier)
    return int(conv.filters)


def gated_layers(model):
    """The `GatedConv` layers of an AdaFilter model, in data-flow order."""
    return [layer for layer in model.layers if isinstance(layer, GatedConv)]


def gate_layers(model):
    """The `BinaryGate` layers of an AdaFilter model, aligned with `gated_layers`."""
    return [layer for layer in model.layers if isinstance(layer, BinaryGate)]


def is_adafilter(model):
    return any(isinstance(layer, GatedConv) for layer in model.layers)


def force_gates(model, value):
    """Fix every gate to 0 (pretrained), 1 (fine-tuned), or None (learned). Eager calls see it at once."""
    for gate in gate_layers(model):
        gate.force = value


def gate_model(model):
    """`images -> [g_1, ..., g_L]`: the gates of every gated layer (for usage statistics)."""
    return keras.Model(model.inputs, [gate.output for gate in gate_layers(model)], name="adafilter_gates")
