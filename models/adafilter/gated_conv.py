"""One AdaFilter layer: a frozen pretrained convolution and its fine-tuned copy, each with its own BatchNorm."""

import copy

import keras
from keras import ops

from models.serialization import PACKAGE

FINETUNED_BN_MODES = ("train", "frozen")  # the run's --bn


def _without_build(serialized):
    """A serialized layer without its build config (the layer is built by `GatedConv.build`)."""
    if serialized is None:
        return None
    serialized = copy.deepcopy(serialized)
    serialized.pop("build_config", None)
    return serialized


def _layer_from(serialized, name, trainable):
    config = copy.deepcopy(serialized)
    config["config"]["name"] = name
    config["config"]["trainable"] = bool(trainable)
    return keras.layers.deserialize(config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedConv(keras.layers.Layer):
    """`out = g * BN_ft(conv_ft(x)) + (1 - g) * BN_pre(conv_pre(x))`, g in {0, 1} per image and output filter.

    "Gated batch normalisation" (AdaFilter, Guo et al. AAAI 2020): each path has its own BatchNorm.
    The pretrained convolution and its BatchNorm are frozen, the BatchNorm in inference mode (our
    reading: the paper does not say whether BN_pre's statistics keep updating; SpotTune's default here
    freezes them too). The fine-tuned copy starts from the same weights, so before training both paths
    agree and the network equals the pretrained one whatever the gates say. Its BatchNorm trains with
    the run's `--bn`: "train", or "frozen" (inference mode, pretrained statistics and affine parameters:
    the ImageNet MobileNet recipe).

    Both paths are computed for every image (also in the exported graph).

    Args:
        conv: `keras.layers.serialize` of the source convolution (Conv2D or DepthwiseConv2D).
        bn: `keras.layers.serialize` of the BatchNormalization after it, or None (no BatchNorm).
        finetuned_bn: "train" or "frozen", the fine-tuned path's BatchNorm.
        source: name of the source layer, "block/layer" (informational: which layer this replaced).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `[x, g]`, x `[batch, h, w, in_channels]`, g `[batch, filters]` in {0, 1}.
        training: bool, BatchNorm mode of the fine-tuned path when it trains.

    Example:
    >>> conv = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
    >>> layer = GatedConv(keras.layers.serialize(conv), keras.layers.serialize(keras.layers.BatchNormalization()))
    >>> layer([keras.ops.zeros((2, 5, 5, 4)), keras.ops.ones((2, 8))]).shape
    (2, 5, 5, 8)

    Reference:
    - [Guo et al., AdaFilter: Adaptive Filter Fine-tuning for Deep Transfer Learning](https://arxiv.org/abs/1911.09659)
    """

    def __init__(self, conv, bn=None, finetuned_bn="train", source="", **kwargs):
        super().__init__(**kwargs)
        if finetuned_bn not in FINETUNED_BN_MODES:
            raise ValueError(f"finetuned_bn must be one of {FINETUNED_BN_MODES}, got {finetuned_bn!r}")
        self.conv = _without_build(conv)
        self.bn = _without_build(bn)
        self.finetuned_bn = finetuned_bn
        self.source = source

        # === Layers ===
        self.pretrained_conv = _layer_from(self.conv, "pretrained_conv", trainable=False)
        self.finetuned_conv = _layer_from(self.conv, "finetuned_conv", trainable=True)
        self.pretrained_bn = _layer_from(self.bn, "pretrained_bn", trainable=False) if bn else None
        self.finetuned_bn_layer = _layer_from(self.bn, "finetuned_bn", trainable=finetuned_bn == "train") if bn else None

    @property
    def filters(self):
        config = self.conv["config"]
        return int(config["filters"]) if config.get("filters") else None

    def build(self, input_shape):
        x_shape = input_shape[0]
        for conv in (self.pretrained_conv, self.finetuned_conv):
            conv.build(x_shape)
        out_shape = self.pretrained_conv.compute_output_shape(x_shape)
        for bn in (self.pretrained_bn, self.finetuned_bn_layer):
            if bn is not None:
                bn.build(out_shape)

    def _branch(self, conv, bn, x, training):
        y = conv(x)
        return bn(y, training=training) if bn is not None else y

    def call(self, inputs, training=None):
        x, gate = inputs
        pretrained = self._branch(self.pretrained_conv, self.pretrained_bn, x, False)
        finetuned = self._branch(self.finetuned_conv, self.finetuned_bn_layer, x, training)
        gate = ops.cast(gate[:, None, None, :], finetuned.dtype)
        return gate * finetuned + (1.0 - gate) * pretrained

    def compute_output_shape(self, input_shape):
        return self.pretrained_conv.compute_output_shape(input_shape[0])

    def copy_source_weights(self, conv, bn=None):
        """Both paths start from the source layers' weights."""
        for target in (self.pretrained_conv, self.finetuned_conv):
            target.set_weights(conv.get_weights())
        if bn is not None:
            for target in (self.pretrained_bn, self.finetuned_bn_layer):
                target.set_weights(bn.get_weights())

    def get_config(self):
        config = super().get_config()
        config.update({"conv": self.conv, "bn": self.bn, "finetuned_bn": self.finetuned_bn, "source": self.source})
        return config
