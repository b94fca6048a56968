"""The pretrained network inside a classifier: frozen copies of its parts, and DELTA's hooked layers."""

import typing

import keras

from models.backbones.base import block_name, clone_layer
from models.classifier import split_classifier
from models.errors import ModelConfigError


class PretrainedParts(typing.NamedTuple):
    """Frozen copies of a classifier's source parts, with the weights they hold when copied."""

    normalization: keras.layers.Layer
    stem: keras.layers.Layer
    blocks: list
    head: keras.layers.Layer


def hook_layer_names(backbone):
    """DELTA's hooked blocks: the last block of each stage, as layer names (block_03, block_06, ...).

    Inside each, DELTA reads the raw output of the last convolution where the block has one
    (`models.regularizers.hook_points`), else the block's output.

    Raises:
        ModelConfigError: the backbone declares no stages.
    """
    stages = [list(stage) for stage in (backbone.stages or []) if len(stage)]
    if not stages:
        raise ModelConfigError(
            f"--regularizer delta hooks the last block of each stage, but backbone {backbone.name!r} declares no "
            "stages (Backbone.stages is empty); use an SP regularizer such as l2sp, or a backbone with stages"
        )
    return [block_name(stage[-1]) for stage in stages]


def pretrained_parts(network):
    """Frozen copies of normalization, stem, blocks and head of `network`, as they are now.

    Called on a freshly built network, this is the pretrained network. A SpotTune block
    (`RoutedBlock`) contributes its frozen pretrained copy F_l; a plain block is copied as it is.
    The copies share nothing with `network` and are marked non-trainable.
    """
    parts = split_classifier(network)

    def frozen(layer, name):
        copy = clone_layer(layer, name=name)
        # Not `copy.trainable = False`: under TensorFlow that assignment is skipped when the flag
        # already reads False (a copy of a frozen SpotTune block), leaving its sublayers trainable.
        keras.layers.Layer.trainable.fset(copy, False)
        return copy

    blocks = [frozen(getattr(block, "pretrained", block), f"{block_name(i)}_w0") for i, block in enumerate(parts.blocks)]
    return PretrainedParts(
        normalization=frozen(parts.normalization, "normalization_w0"),
        stem=frozen(parts.stem, "stem_w0"),
        blocks=blocks,
        head=frozen(parts.head, "head_w0"),
    )


def feature_extractor(parts, hooks, convolution_hooks=None, name="pretrained_features"):
    """A functional model `image -> [feature map of each hooked block]` from `PretrainedParts`.

    The map of a hooked `BasicBlock` is its last convolution's raw output (before BatchNorm and
    the residual add, the DELTA authors' hook); other blocks give their output. `convolution_hooks`
    (names) overrides which blocks are read at their convolution, so that the pretrained side
    matches the network being trained (a SpotTune routed block is read at its output, its frozen
    copy here too). Only the blocks up to the last hooked one are run.
    """
    from models.regularizers.hook_points import LastConvolutionOutput, hooks_last_convolution

    indices = [int(hook.split("_")[-1]) - 1 for hook in hooks]
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = parts.stem(parts.normalization(inputs))
    features = {}
    for index in range(max(indices) + 1):
        block = parts.blocks[index]
        at_convolution = hooks_last_convolution(block) if convolution_hooks is None else block_name(index) in convolution_hooks
        if index in indices and at_convolution:
            features[index] = LastConvolutionOutput(block, name=f"{block.name}_hook")(x)
        x = block(x)
        features.setdefault(index, x)
    model = keras.Model(inputs, [features[index] for index in indices], name=name)
    model.trainable = False
    return model
