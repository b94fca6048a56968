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
            logits = logits - ops.log(-ops.log(self.uniform_noise(logits)))  # + Gumbel(0, 1) noise
        soft = ops.softmax(logits / tau, axis=-1)
        if not self.hard:
            return soft
        # The choice is taken on the (noisy) logits, not on `soft`, which can saturate into ties.
        return hard_one_hot(logits) + (soft - ops.stop_gradient(soft))

    def uniform_noise(self, like):
        """Uniform(_MIN_UNIFORM, 1) draws of the shape and dtype of `like`, from the layer's seed generator."""
        replica, replicas = replica_in_sync()
        # Under tf.distribute every replica holds the same seed state: each draws the noise of all
        # replicas and keeps its own slice, so replicas differ and a seed still fixes the whole run.
        shape = ops.shape(like) if replicas == 1 else (replicas,) + tuple(ops.shape(like))
        u = keras.random.uniform(shape, minval=_MIN_UNIFORM, maxval=1.0, dtype=like.dtype, seed=self.seed_generator)
        if replicas > 1:
            u = ops.take(u, replica, axis=0)
        return u

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class TopKGumbelGate(GumbelSoftmax):
    """A straight-through Gumbel top-k gate over the blocks: exactly `top_k` fine-tuned copies per image.

    The global-k budget acting on the ranking of the blocks rather than on the sum of their
    probabilities (`--block-choice top_k`, docs/methods/global_k.md). For the policy logits
    `[batch, L, 2]`, the noisy margin of block l is

        s_l = (logits[l, 1] + g_l1) - (logits[l, 0] + g_l0),   g ~ Gumbel(0, 1)

    (training and `inference="sample"`; `g = 0` at deterministic inference), the same noisy margin
    whose sign `GumbelSoftmax` thresholds at 0. Here the k largest s_l of each image take their
    fine-tuned copy (ties to the earlier block), the others their pretrained copy: in the forward
    pass the routing is exactly `one_hot(top_k(s))`, whatever the logits, so no count term is needed
    and the count cannot collapse. The backward pass is the straight-through gradient of the soft
    decision `sigmoid((s_l - t) / tau)`, t the midpoint between the k-th and (k+1)-th largest
    margins (held fixed): a block whose fine-tuned copy lowers the loss has its margin raised, which
    is what moves it into the top k. Without noise the choice is the k largest logit margins, which
    is `models.spottune.compact.fixed_decisions(model, k)`: the compact model computes exactly what
    the routed model computes at deterministic inference.

    Sampling k items without replacement by the top k of Gumbel-perturbed scores is the Gumbel-top-k
    trick (Kool et al., 2019); the relaxation through a sigmoid around the k-th score is our choice
    (simpler than the relaxed top-k of Xie and Ermon, 2019, and exact in the forward pass).

    Args:
        top_k: k, the number of blocks routed to their fine-tuned copy (0 <= k <= L).
        temperature: tau of the soft decision (the backward pass only), as `GumbelSoftmax`.
        inference: "deterministic" (top k of the logit margins) or "sample" (noisy, as in training).
        seed: integer seed of the noise, or None.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: policy logits `[batch, L, 2]`.
        training: bool; noise is drawn when True.

    Returns:
        routing `[batch, L, 2]`: one-hot per block, exactly `top_k` blocks with index 1 per image.

    Reference:
    - [Kool et al., Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick](https://arxiv.org/abs/1903.06059)
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737),
      section 3.3 (the global-k budget this gate enforces)
    """

    def __init__(self, top_k, temperature=5.0, inference="deterministic", seed=None, **kwargs):
        kwargs.pop("hard", None)  # always hard: the forward pass is the exact top k
        super().__init__(temperature=temperature, hard=True, inference=inference, seed=seed, **kwargs)
        if int(top_k) < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k!r}")
        self.top_k = int(top_k)

    def call(self, inputs, training=None):
        logits = ops.cast(inputs, self.compute_dtype)
        tau = ops.cast(self.temperature, logits.dtype)
        if training or self.inference == "sample":
            logits = logits - ops.log(-ops.log(self.uniform_noise(logits)))  # + Gumbel(0, 1) noise
        margin = logits[..., 1] - logits[..., 0]  # [batch, L]
        num_blocks = int(margin.shape[-1])
        k = self.top_k
        if k > num_blocks:
            raise ValueError(f"top_k {k} is more than the {num_blocks} blocks")
        values, indices = ops.top_k(margin, k=min(k + 1, num_blocks), sorted=True)  # ties: earlier block first
        if k == 0:
            chosen = ops.zeros_like(margin)
            threshold = values[..., 0] + 1.0
        else:
            chosen = ops.sum(ops.one_hot(indices[..., :k], num_blocks, dtype=margin.dtype), axis=-2)
            threshold = 0.5 * (values[..., k - 1] + values[..., k]) if k < num_blocks else values[..., k - 1] - 1.0
        threshold = ops.expand_dims(ops.stop_gradient(threshold), -1)
        soft = ops.sigmoid((margin - threshold) / tau)
        finetuned = chosen + (soft - ops.stop_gradient(soft))
        return ops.stack([1.0 - finetuned, finetuned], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.pop("hard", None)
        config["top_k"] = self.top_k
        return config
