"""Freezing helpers shared by the baseline strategies, with the BatchNorm policy in one place."""

import keras


def set_trainable(layer, trainable, bn="train"):
    """Mark `layer` (and everything inside it) trainable or frozen.

    Keras 3 runs a BatchNormalization layer whose `trainable` is False in inference mode (moving
    statistics used and not updated), so freezing a layer freezes its BatchNorm too. With
    `bn="frozen"`, the BatchNorm layers inside a trainable layer are frozen as well: they keep the
    pretrained statistics and affine parameters while the convolutions train.
    """
    layer.trainable = trainable
    if trainable and bn == "frozen":
        for sub in _sublayers(layer):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.trainable = False


def _sublayers(layer):
    if hasattr(layer, "_flatten_layers"):
        return [sub for sub in layer._flatten_layers(include_self=True, recursive=True)]
    return [layer]
