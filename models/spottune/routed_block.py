"""One SpotTune block: a frozen pretrained copy and a fine-tuned copy, mixed per image by a gate.

Method page: docs/methods/spottune.md.
"""

import keras
from keras import ops

from models.serialization import PACKAGE
from models.spottune.names import FROZEN_BN_MODES  # noqa: F401  (defined without Keras there)

AFFINE_NAMES = ("gamma", "beta")
FINETUNED_BN_MODES = ("train", "frozen")  # the run's --bn (models.strategies.base.BN_MODES)


def set_trainable(layer, value):
    """`layer.trainable = value`, propagated to sublayers and variables even when unchanged.

    Under the TensorFlow backend, `layer.trainable = value` is skipped entirely when
    `layer.trainable` already equals `value` (the trackable `__setattr__` short-circuits on
    identical values), so a layer deserialized with `trainable=False` keeps trainable sublayers.
    """
    keras.layers.Layer.trainable.fset(layer, value)


def freeze_batchnorm(layer):
    """Sets every BatchNormalization inside `layer` (itself included) `trainable = False`.

    Keras 3 runs such a layer in inference mode even under `fit`, with gamma / beta fixed; the
    other sublayers keep their flags.
    """
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, keras.layers.BatchNormalization):
            set_trainable(sub, False)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RoutedBlock(keras.layers.Layer):
    """`x_l = I_l * G_l(x_{l-1}) + (1 - I_l) * F_l(x_{l-1})`, I_l in {0, 1} per image.

    F_l (`pretrained`) keeps the pretrained weights; G_l (`finetuned`) starts from the same weights
    and is trained. `I_l = routing[:, index, 1]`, the gate's one-hot sample for this block,
    broadcast over the feature map; with a straight-through gate, dLoss/dI_l = <dLoss/dx_l,
    G_l(x) - F_l(x)>, which is how the policy learns. (That is zero while G_l computes what F_l
    does: with `frozen_bn="train"` the policy gets its first gradient only after the first update
    of the G_l; with "frozen" the copies already differ in training by their BatchNorm mode.)
    Both copies run for every image. With I_l exactly 0 or 1 the output is exactly F_l(x) or G_l(x).

    How the frozen copy is frozen (`frozen_bn`):
    - "frozen" (default; the paper's reading): `pretrained.trainable = False` and it is always
      called with `training=False`: no weight receives a gradient, BatchNorm normalises with its
      moving statistics and never updates them.
    - "train" (the authors' code, docs/methods/spottune.md): the layer stays `trainable` so its
      BatchNorm layers run in training mode (batch statistics; moving statistics updated), but
      every variable of the copy is marked `variable.trainable = False`, so neither the kernels
      nor gamma / beta are in `model.trainable_variables`: no optimizer touches them.
    - "train_affine" (what the authors' code actually does: it only sets `requires_grad = False`
      on the convolution weights): as "train", but gamma and beta stay trainable.
    The per-variable flags are re-applied after building (so they survive a `.keras` round trip)
    and whenever this layer's `trainable` is set to True (e.g. by `model.trainable = True`).

    How the fine-tuned copy's BatchNorm trains (`finetuned_bn`, the run's `--bn`):
    - "train" (default): batch statistics in training, moving statistics updated, gamma / beta learned.
    - "frozen": every BatchNorm layer of G_l is set `trainable = False` (Keras 3: inference mode with
      the pretrained statistics, gamma / beta fixed) while its convolutions train. The ImageNet
      MobileNets need this (README, "ImageNet backbones"): in training mode their BatchNorm diverges
      from the statistics the folded weights were made with, and G_l(x) and F_l(x) would differ by
      BatchNorm mode alone, which the policy would learn from instead of from the fine-tuning.

    Args:
        pretrained: the frozen copy F_l, a built layer (custom registered layer or functional
            sub-model), e.g. `clone_layer(backbone.blocks[l])`.
        finetuned: the trainable copy G_l, same architecture, initialised with the same weights.
        index: l, the block's position (0-based) in the routing tensor.
        frozen_bn: "frozen", "train" or "train_affine", see above.
        finetuned_bn: "train" or "frozen", see above.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a list `[x, routing]`: x the previous block's output `[batch, ...]`, routing the
            gate's one-hot samples `[batch, L, 2]` (index 1 = fine-tuned copy).
        training: bool, BatchNorm mode of the fine-tuned copy (and of the frozen one unless
            `frozen_bn="frozen"`).

    Example:
    >>> block = RoutedBlock(clone_layer(b), clone_layer(b), index=0)
    >>> y = block([x, routing])

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737)
    """

    def __init__(self, pretrained, finetuned, index, frozen_bn="frozen", finetuned_bn="train", **kwargs):
        super().__init__(**kwargs)
        if frozen_bn not in FROZEN_BN_MODES:
            raise ValueError(f"frozen_bn must be one of {FROZEN_BN_MODES}, got {frozen_bn!r}")
        if finetuned_bn not in FINETUNED_BN_MODES:
            raise ValueError(f"finetuned_bn must be one of {FINETUNED_BN_MODES}, got {finetuned_bn!r}")
        if int(index) < 0:
            raise ValueError(f"index must be >= 0, got {index!r}")
        self.pretrained = pretrained
        self.finetuned = finetuned
        self.index = int(index)
        self.frozen_bn = frozen_bn
        self.finetuned_bn = finetuned_bn
        self.apply_freezing()

    @property
    def trainable(self):
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        if value and "pretrained" in self.__dict__:
            self.apply_freezing()

    def apply_freezing(self):
        """(Re)applies the trainable flags of both copies described in the class docstring."""
        if not self.trainable:
            return
        set_trainable(self.finetuned, True)
        if self.finetuned_bn == "frozen":
            freeze_batchnorm(self.finetuned)
        if self.frozen_bn == "frozen":
            set_trainable(self.pretrained, False)
            return
        set_trainable(self.pretrained, True)
        for variable in self.pretrained.weights:
            if self.frozen_bn == "train" or variable.name not in AFFINE_NAMES:
                variable.trainable = False

    def build(self, input_shape):
        x_shape = input_shape[0]
        for copy in (self.pretrained, self.finetuned):
            if not copy.built:
                copy.build(x_shape)
        self.apply_freezing()

    def call(self, inputs, training=None):
        x, routing = inputs
        frozen_training = False if self.frozen_bn == "frozen" else training
        y_pretrained = self.pretrained(x, training=frozen_training)
        y_finetuned = self.finetuned(x, training=training)
        gate = ops.cast(routing[:, self.index, 1], y_finetuned.dtype)
        gate = ops.reshape(gate, (-1,) + (1,) * (len(y_finetuned.shape) - 1))
        return gate * y_finetuned + (1.0 - gate) * y_pretrained

    def compute_output_shape(self, input_shape):
        return self.finetuned.compute_output_shape(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pretrained": keras.saving.serialize_keras_object(self.pretrained),
                "finetuned": keras.saving.serialize_keras_object(self.finetuned),
                "index": self.index,
                "frozen_bn": self.frozen_bn,
                "finetuned_bn": self.finetuned_bn,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("pretrained", "finetuned"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
