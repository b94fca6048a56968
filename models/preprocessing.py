"""Input normalisation inside the model, so saved and exported models take raw pixels."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelNormalization(keras.layers.Layer):
    """Maps raw pixel values to the input distribution a backbone expects.

    `y = (x * scale)[..., order] - mean) / std`, per channel. Images enter the model as float RGB
    in [0, 255]; `scale` brings them to the range the statistics were measured in (1/255 for
    statistics of images in [0, 1], 1 for Caffe-style statistics), `channel_order="bgr"` flips
    RGB to BGR first (Caffe / Keras-2 ImageNet models).

    Args:
        mean: per-channel mean, in the scaled units, in the output channel order.
        std: per-channel standard deviation, same units.
        scale: factor applied to the raw pixels before the statistics.
        channel_order: "rgb" or "bgr".
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, 3]`, RGB in [0, 255].

    Example:
    >>> layer = ChannelNormalization(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], scale=1 / 255)
    """

    def __init__(self, mean, std, scale=1.0 / 255.0, channel_order="rgb", **kwargs):
        super().__init__(**kwargs)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.scale = float(scale)
        self.channel_order = channel_order

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype) * self.scale
        if self.channel_order == "bgr":
            x = keras.ops.flip(x, axis=-1)
        mean = keras.ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = keras.ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"mean": self.mean, "std": self.std, "scale": self.scale, "channel_order": self.channel_order}
        )
        return config
