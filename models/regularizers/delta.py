"""DELTA: keep the fine-tuned network's feature maps close to the pretrained network's, channel by channel.

Method page: docs/methods/delta.md.
"""

import keras
import numpy as np
from keras import ops

from models.classifier import call_site
from models.regularizers import REDUCTIONS  # declared without Keras there (the command line's choices)
from models.regularizers.hook_points import hooks_last_convolution, last_convolution_output
from models.regularizers.parts import feature_extractor, pretrained_parts
from models.regularizers.references import Untracked
from models.serialization import PACKAGE
from models.training_term import TrainingTerm
from models.transfer_trainer import INPUT_SUFFIX


def attention_feature_distance(current, pretrained, attention, reduction="mean"):
    """Raw DELTA penalty `red_b sum_j sum_c C_j W_jc * 1/2 ||FM_jc(w, x_b) - FM_jc(w0, x_b)||^2 / (h_j w_j)`.

    The squared distance of each channel's map is divided by its spatial size and weighted by the
    channel attention W_jc times the number of channels C_j, as in the authors' code (DELTA
    repository; Transfer-Learning-Library's `AttentionBehavioralRegularization`): the softmax
    attention sums to 1 over a layer, so C_j W_jc averages 1 and a layer counts by its channels.
    `red_b` over the examples of the batch:
    - "mean" (default, our choice): the batch mean, like the cross-entropy it is added to, so
      alpha does not change meaning with the batch size;
    - "sum": the authors' code sums over the batch. Measured (ResNet-20, clothing-small at 32 px,
      batch 64, 3 epochs): with the authors' alpha 0.01 the summed term is about 5x the
      cross-entropy at the start and test accuracy drops to 0.33 (L2: 0.59); the mean, i.e.
      alpha / 64 in their units, trains normally.
    The paper's formula has neither C_j nor a batch reduction (one example); docs/methods/delta.md.

    Args:
        current: list of feature maps `[B, h_j, w_j, C_j]` of the network being trained.
        pretrained: list of the pretrained network's feature maps on the same batch (no gradient
            flows into them).
        attention: list of `[C_j]` channel weights W_j.
        reduction: "mean" or "sum" over the batch.

    Returns:
        a float32 scalar.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    total = ops.zeros((), "float32")
    for fm, fm0, weights in zip(current, pretrained, attention):
        fm = ops.cast(fm, "float32")
        fm0 = ops.stop_gradient(ops.cast(fm0, "float32"))
        shape = ops.shape(fm)
        area = ops.cast(shape[1] * shape[2], "float32")
        channels = float(fm.shape[-1])
        per_channel = ops.sum(ops.square(fm - fm0), axis=(1, 2)) / area  # [B, C]
        per_example = 0.5 * channels * ops.sum(per_channel * ops.cast(weights, "float32"), axis=-1)  # [B]
        total = total + (ops.mean(per_example) if reduction == "mean" else ops.sum(per_example))
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class DeltaPenalty(TrainingTerm):
    """DELTA's feature-map term: `alpha * attention_feature_distance(FM(w, x), FM(w0, x), W)`.

    FM_j is read in hooked block j (the last block of each stage) where the authors read it: the
    raw output of the block's last convolution, before its BatchNorm and the residual add
    (`models.regularizers.hook_points`; a block without such a convolution, e.g. a fire module or
    a SpotTune routed block, is read at its output). FM(w0, x) comes from a
    frozen copy of the pretrained normalization + stem + blocks (up to the last hook), owned by
    this term and taken when it is built (a freshly built network holds the pretrained weights),
    so it is saved with the resume checkpoint; running it is the extra forward pass DELTA costs.
    FM(w, x) is computed from the trainer's outputs (`outputs["features"]`: the `TransferTrainer`
    returns the hooked blocks' inputs, `feature_inputs`, and outputs, `feature_layers`), so the
    network runs once per step (plus the hooked blocks' first convolutions again); without them
    the term recomputes them from the batch images with a view of the network (a second forward
    pass through the trained layers). The channel attention W comes
    from `models.regularizers.channel_attention.estimate_channel_attention`. The
    `beta/2 ||w_new||^2` part of DELTA is a separate term (`WeightDecayPenalty`).
    Authors' defaults: alpha 0.01, beta 0.01, no other weight decay.

    Args:
        network: the network being trained (a freshly built one: its parts are copied as w0); None
            when rebuilt from a config (`bind(network)` then builds the state, whose values come
            from the saved weights).
        hooks: names of the hooked layers (`models.regularizers.parts.hook_layer_names`).
        attention: list of `[C_j]` arrays, the channel attention of each hooked layer (default: uniform).
        alpha: trade-off weight.
        reduction: "mean" (default) or "sum" (the authors' code) over the batch; see
            `attention_feature_distance`.
        **kwargs: passed to `TrainingTerm` (`name` is the metric's name).

    Call arguments:
        outputs: the trainer's outputs for the batch: a dict with "logits" and "features".
        images: the batch images (the input of the pretrained copy).
        training: unused (the pretrained copy always runs in inference mode).

    Example:
    >>> term = DeltaPenalty(model, ["block_03", "block_06", "block_09"], attention, alpha=0.01, name="delta")

    Reference:
    - [Li et al., DELTA: DEep Learning Transfer using Feature Map with Attention for Convolutional
      Networks (ICLR 2019)](https://arxiv.org/abs/1901.09229)
    """

    needs_inputs = True

    def __init__(self, network=None, hooks=(), attention=None, alpha=0.01, reduction="mean", **kwargs):
        super().__init__(**kwargs)
        if float(alpha) < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.alpha = float(alpha)
        self.reduction = reduction
        self.hooks = tuple(hooks)
        if attention is not None and len(attention) != len(self.hooks):
            raise ValueError(f"{len(attention)} attention vectors for {len(self.hooks)} hooked layers")
        self._blocks = Untracked(None)
        self._current = Untracked(None)
        self.feature_inputs, self.feature_layers = (), ()
        if network is not None:
            self.create_state(network, attention)
        self.built = True

    def bind(self, network):
        """Build the pretrained copy and attention slots for `network` (their values come from the saved weights)."""
        self.create_state(network, None)

    def create_state(self, network, attention):
        """References to the hooked blocks of `network`, a frozen copy of its pretrained parts, and the attention weights."""
        blocks = {name: network.get_layer(name) for name in self.hooks}
        self._blocks.value = blocks
        # Blocks read at their last convolution need their input; the others, their output.
        self.feature_inputs = tuple(name for name in self.hooks if hooks_last_convolution(blocks[name]))
        self.feature_layers = tuple(name for name in self.hooks if name not in self.feature_inputs)
        self.pretrained = feature_extractor(pretrained_parts(network), self.hooks, convolution_hooks=self.feature_inputs)
        views = {name + INPUT_SUFFIX: call_site(network, name)[0] for name in self.feature_inputs}
        views.update({name: call_site(network, name)[1] for name in self.feature_layers})
        self._current.value = keras.Model(network.input, views, name="current_features")
        weights_list = []
        for index, name in enumerate(self.hooks):
            channels = network.get_layer(name).output.shape[-1]
            weights = np.full((channels,), 1.0 / channels, "float32") if attention is None else np.asarray(attention[index], "float32")
            if len(weights) != channels:
                raise ValueError(f"attention for {name} has {len(weights)} entries, the layer has {channels} channels")
            variable = self.add_weight(shape=(channels,), initializer="zeros", trainable=False, name=f"attention_{index}")
            variable.assign(weights)
            weights_list.append(variable)
        self.attention = weights_list

    def call(self, outputs, images=None, training=None):
        if images is None:
            raise ValueError("DeltaPenalty needs the batch images (the trainer passes them to terms with needs_inputs)")
        if self._blocks.value is None:
            raise ValueError(f"term {self.name!r} was rebuilt from its config: bind it to the network first")
        features = outputs.get("features") if isinstance(outputs, dict) else None
        if features is None:
            features = self._current.value(images, training=training)
        current = [self.current_feature(name, features, training) for name in self.hooks]
        pretrained = self.pretrained(images, training=False)
        if not isinstance(pretrained, (list, tuple)):
            pretrained = [pretrained]
        return self.alpha * attention_feature_distance(current, pretrained, self.attention, self.reduction)

    def current_feature(self, name, features, training=None):
        """FM_j(w, x) of hooked block `name` from the trainer's features."""
        if name in self.feature_inputs:
            return last_convolution_output(self._blocks.value[name], features[name + INPUT_SUFFIX], training)
        return features[name]

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "hooks": list(self.hooks), "reduction": self.reduction})
        return config
