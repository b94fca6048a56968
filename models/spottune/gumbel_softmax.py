"""The Gumbel-softmax gate of SpotTune (docs/methods/spottune.md): a differentiable discrete choice."""

import keras
from keras import ops

from models.serialization import PACKAGE
from models.spottune.names import INFERENCE_MODES  # noqa: F401  (defined without Keras there)

# Smallest uniform draw: keeps -log(-log(u)) finite (the authors add 1e-20 inside both logs).
_MIN_UNIFORM = 1e-20


def hard_one_hot(x, axis=-1):
    """One-hot of the largest entry of `x` along `axis` (the first one on ties), as floats.

    Built from `max`, `equal` and `cumsum` only: `keras.ops.argmax` on floats lowers to
    Bitcast / BitwiseAnd under TensorFlow, which TFLite and tf2onnx cannot convert.

    Args:
        x: float tensor.
        axis: the axis holding the choices.

    Returns:
        a tensor of the shape and dtype of `x`, exactly one 1 along `axis`, zeros elsewhere.
    """
    is_max = ops.cast(ops.equal(x, ops.max(x, axis=axis, keepdims=True)), x.dtype)
    first = ops.cast(ops.equal(ops.cumsum(is_max, axis=axis), 1.0), x.dtype)
    return is_max * first


def replica_in_sync():
    """(index of this replica, replicas in sync) inside a tf.distribute replica, else (0, 1)."""
    if keras.backend.backend() != "tensorflow":
        return 0, 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


@keras.saving.register_keras_serializable(package=PACKAGE)
class GumbelSoftmax(keras.layers.Layer):
    """Samples a (straight-through) one-hot choice from logits with the Gumbel-softmax trick.

    Training (and `inference="sample"`): `y = softmax((logits + g) / tau)`, `g = -log(-log(u))`,
    `u ~ Uniform(0, 1)` from the layer's `SeedGenerator`. With `hard=True` the output is the
    straight-through one-hot `y_hard + (y - stop_gradient(y))`: exactly `one_hot(argmax(y))` in
    the forward pass, the gradient of the soft sample `y` in the backward pass. (This is the
    authors' `y_hard - stop_gradient(y) + y` rearranged so that the forward value is exactly 0/1 in
    floating point.) With `hard=False` the soft sample `y` itself.

    Inference with `inference="deterministic"` (the default): no noise; the one-hot of the most
    likely choice (`hard=True`, again with the straight-through gradient of `softmax(logits / tau)`),
    or `softmax(logits / tau)` (`hard=False`). Note that the hard choice does not depend on `tau`:
    `P(choice = i) = softmax(logits)[i]` whatever the temperature.

    The temperature is a non-trainable variable (`self.temperature`), saved with the weights, so a
    callback (`models.spottune.temperature_schedule.TemperatureSchedule`) can anneal it without retracing.
    The inference mode is a Python attribute read at trace time: after changing it on a compiled
    model, use `models.spottune.classifier.set_inference_mode`, which also drops the cached functions.

    Args:
        temperature: initial temperature tau > 0. The authors use 5, constant.
        hard: return straight-through one-hot samples (True) or soft samples (False).
        inference: "deterministic" (most likely choice, no noise) or "sample" (draw as in training,
            as the authors' code does at test time).
        seed: integer seed of the noise, or None for a random one.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float logits `[..., n]`, the choices on the last axis.
        training: bool; samples are drawn when True.

    Example:
    >>> gate = GumbelSoftmax(temperature=5.0, seed=0)
    >>> gate(keras.ops.convert_to_tensor([[2.0, -1.0]]), training=False)  # [[1.0, 0.0]]

    Reference:
    - [Jang et al., Categorical Reparameterization with Gumbel-Softmax](https://arxiv.org/abs/1611.01144)
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737)
    """

    def __init__(self, temperature=5.0, hard=True, inference="deterministic", seed=None, **kwargs):
        super().__init__(**kwargs)
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}")
        self.initial_temperature = float(temperature)
        self.hard = bool(hard)
        self.inference = inference
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
            name="temperature",
        )

    def call(self, inputs, training=None):
        logits = ops.cast(inputs, self.compute_dtype)
        tau = ops.cast(self.temperature, logits.dtype)
        if training or self.inference == "sample":
            replica, replicas = replica_in_sync()
            # Under tf.distribute every replica holds the same seed state: each draws the noise of all
            # replicas and keeps its own slice, so replicas differ and a seed still fixes the whole run.
            shape = ops.shape(logits) if replicas == 1 else (replicas,) + tuple(ops.shape(logits))
            u = keras.random.uniform(shape, minval=_MIN_UNIFORM, maxval=1.0, dtype=logits.dtype, seed=self.seed_generator)
            if replicas > 1:
                u = ops.take(u, replica, axis=0)
            logits = logits - ops.log(-ops.log(u))  # + Gumbel(0, 1) noise
        soft = ops.softmax(logits / tau, axis=-1)
        if not self.hard:
            return soft
        # The choice is taken on the (noisy) logits, not on `soft`, which can saturate into ties.
        return hard_one_hot(logits) + (soft - ops.stop_gradient(soft))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "temperature": self.initial_temperature,
                "hard": self.hard,
                "inference": self.inference,
                "seed": self.seed,
            }
        )
        return config
