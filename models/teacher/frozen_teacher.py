"""A frozen copy of a pretrained network, returning the feature maps its stages produce."""

import keras

from models.backbones.base import clone_layer
from models.preprocessing import ChannelNormalization

TEACHER_PREFIX = "teacher_"


def freeze(layer):
    """Mark `layer` and everything in it frozen: no trainable weights, BatchNorm in inference mode."""
    layer.trainable = False
    return layer


def teacher_features_model(normalization, stem, blocks, ends, name="teacher"):
    """The functional model `image -> [stem output, stage 1 output, ..., stage K output]`.

    The layers are used as given (not copied) and must be frozen by the caller; the model is meant
    to be called with `training=False`, so BatchNorm always uses the pretrained statistics.

    Args:
        normalization: the input layer (images in [0, 255] -> the network's input statistics).
        stem: the stem layer.
        blocks: the blocks, in order, up to the last stage needed.
        ends: the last block index of each stage wanted (ascending, below len(blocks)).
        name: the model's name.
    """
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = stem(normalization(inputs))
    features = [x]
    for index, block in enumerate(blocks[: ends[-1] + 1] if ends else []):
        x = block(x)
        if index in ends:
            features.append(x)
    return freeze(keras.Model(inputs, features, name=name))


def frozen_copy(network, ends, name="teacher"):
    """A frozen copy of `network`'s normalisation, stem and blocks (weights copied now), returning stage features.

    Called before training starts, the copy holds the pretrained weights: the teacher of FitNets,
    Hybrid Forward and same-network L2T-ww. Its layers are new and independent of `network`.

    Args:
        network: an assembled classifier.
        ends: the last block index of each stage (`models.teacher.stages.stage_ends`).
        name: the teacher model's name (its layers are named `teacher_<part>`).
    """
    from models.classifier import split_classifier

    parts = split_classifier(network)
    normalization = ChannelNormalization.from_config({**parts.normalization.get_config(), "name": TEACHER_PREFIX + "normalization"})
    stem = freeze(clone_layer(parts.stem, name=TEACHER_PREFIX + parts.stem.name))
    blocks = [freeze(clone_layer(block, name=TEACHER_PREFIX + block.name)) for block in parts.blocks[: ends[-1] + 1 if ends else 0]]
    return teacher_features_model(normalization, stem, blocks, ends, name=name)
