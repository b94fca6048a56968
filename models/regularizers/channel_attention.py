"""DELTA's channel attention: how much the target loss rises when one channel of a hooked layer is zeroed.

Method page: docs/methods/delta.md.
"""

import time
import typing

import keras
import numpy as np
from keras import ops

from models.regularizers.hook_points import hooks_last_convolution, last_convolution
from models.regularizers.parts import pretrained_parts


class AttentionEstimate(typing.NamedTuple):
    """What `estimate_channel_attention` measured.

    Attributes:
        attention: list of float32 arrays `[C_j]`, softmax(z / temperature) per hooked layer (each sums to 1).
        rises: list of float arrays `[C_j]`, the mean rise of the cross-entropy when channel c is zeroed.
        head_accuracy: training accuracy of the new head on the frozen pretrained features.
        base_loss: mean cross-entropy of pretrained network + new head on the scoring batches.
        seconds: wall time.
    """

    attention: list
    rises: list
    head_accuracy: float
    base_loss: float
    seconds: float


def attention_from_rises(rises, temperature=5.0):
    """`softmax(z / temperature)` with z the rises z-scored within the layer (authors' code).

    A layer whose rises are all equal (zero spread) gets uniform attention.
    """
    rises = np.asarray(rises, np.float64)
    spread = rises.std()
    z = (rises - rises.mean()) / spread if spread > 0 else np.zeros_like(rises)
    logits = z / float(temperature)
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).astype(np.float32)


def estimate_channel_attention(
    network,
    hooks,
    head_batches,
    score_batches,
    num_classes,
    head_epochs=10,
    score_batches_count=4,
    temperature=5.0,
    learning_rate=0.01,
    images_per_call=256,
    seed=0,
):
    """DELTA channel attention W_j for each hooked layer j of the pretrained network.

    The authors' recipe (DELTA code; Transfer-Learning-Library `calculate_channel_attention`):
    1. train only a new linear head on the frozen pretrained network (`head_epochs`, default 10);
    2. on `score_batches_count` batches (default 4), for each channel c of each hooked layer j,
       zero filter c of the hooked convolution (the block's last one; its BatchNorm then turns
       channel c into a constant, and the residual add follows) and record the rise of the
       batch-mean cross-entropy, averaged over the batches;
    3. z-score the rises within the layer, then `W_j = softmax(z / temperature)` (temperature 5).

    A hooked block without such a convolution (`models.regularizers.hook_points`: fire modules,
    SpotTune's routed blocks) has channel c of its output zeroed instead (our fallback).
    Differences from the authors' code (our choices, for CPU cost): the head is trained on
    features computed once with the evaluation preprocessing (no augmentation; the pretrained
    network is frozen, so each epoch would recompute the same features up to augmentation), with
    Adam. Method page: docs/methods/delta.md.

    Cost: one forward pass of the pretrained network over `head_batches`, a few seconds of head
    training, and for each hooked layer j, C_j forward passes of the rest of the network over each
    scoring batch (batched `images_per_call` images at a time).

    Args:
        network: a freshly built classifier or SpotTune model (its source parts are copied, frozen).
        hooks: hooked layer names (`models.regularizers.parts.hook_layer_names`).
        head_batches: iterable of (images, labels) to train the head on (target training data).
        score_batches: iterable of (images, labels) to score channels on.
        num_classes: classes of the target task.
        head_epochs: epochs of head training.
        score_batches_count: number of scoring batches.
        temperature: softmax temperature of the z-scores.
        learning_rate: Adam learning rate of the head.
        images_per_call: images per forward pass when scoring channels.
        seed: seeds the head's initialisation and shuffling.

    Returns:
        an `AttentionEstimate`.

    Reference:
    - [Li et al., DELTA: DEep Learning Transfer using Feature Map with Attention for Convolutional
      Networks (ICLR 2019)](https://arxiv.org/abs/1901.09229), section 3.2.
    """
    started = time.perf_counter()
    parts = pretrained_parts(network)
    indices = [int(hook.split("_")[-1]) - 1 for hook in hooks]

    at_convolution = [hooks_last_convolution(network.get_layer(hook)) for hook in hooks]

    def prefix(images, stop):
        """(output of blocks 0..stop-1, {index: input of block index})."""
        x = parts.stem(parts.normalization(images, training=False), training=False)
        inputs = {}
        for index in range(stop):
            inputs[index] = x
            x = parts.blocks[index](x, training=False)
        return x, inputs

    def zeroed(index, x, chosen, filters):
        """Outputs of block `index` for input `x`, one per channel in `chosen` with that channel zeroed, stacked."""
        block = parts.blocks[index]
        if not filters:
            h = block(x, training=False)
            masks = np.ones((len(chosen), 1, 1, 1, int(h.shape[-1])), np.float32)
            for row, c in enumerate(chosen):
                masks[row, ..., c] = 0.0
            return ops.reshape(h[None] * masks, (-1,) + tuple(ops.shape(h)[1:]))
        kernel = last_convolution(block).kernel
        original = ops.convert_to_numpy(kernel)
        outputs = []
        try:
            for c in chosen:
                changed = original.copy()
                changed[..., c] = 0.0
                kernel.assign(changed)
                outputs.append(block(x, training=False))
        finally:
            kernel.assign(original)
        return ops.concatenate(outputs, axis=0)

    def suffix(x, start):
        for index in range(start, len(parts.blocks)):
            x = parts.blocks[index](x, training=False)
        return parts.head(x, training=False)

    # 1. A new head on frozen pretrained features.
    features, labels = [], []
    for images, batch_labels in head_batches:
        x, _ = prefix(images, len(parts.blocks))
        features.append(ops.convert_to_numpy(parts.head(x, training=False)))
        labels.append(np.asarray(batch_labels))
    if not features:
        raise ValueError("estimate_channel_attention got no training batches for the head")
    features, labels = np.concatenate(features), np.concatenate(labels)
    head = keras.Sequential(
        [keras.Input((features.shape[-1],)), keras.layers.Dense(int(num_classes), kernel_initializer=keras.initializers.GlorotUniform(seed))]
    )
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = head.fit(features, labels, epochs=int(head_epochs), batch_size=64, shuffle=True, verbose=0)
    head_accuracy = float(history.history["accuracy"][-1]) if head_epochs else float("nan")
    dense = head.layers[-1]

    def cross_entropy(logits, targets):
        return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)

    # 2. Rise of the cross-entropy when one channel of a hooked layer is zeroed.
    sums = [None] * len(hooks)
    base_losses, count = [], 0
    for batch_number, (images, batch_labels) in enumerate(score_batches):
        if batch_number >= score_batches_count:
            break
        targets = ops.convert_to_tensor(np.asarray(batch_labels))
        x, activations = prefix(images, max(indices) + 1)
        base = float(ops.mean(cross_entropy(dense(suffix(x, max(indices) + 1)), targets)))
        base_losses.append(base)
        batch = int(ops.shape(x)[0])
        for j, index in enumerate(indices):
            block_input = activations[index]
            channels = int(network.get_layer(hooks[j]).output.shape[-1])
            rises = np.zeros((channels,), np.float64)
            step = max(1, int(images_per_call) // batch)
            for first in range(0, channels, step):
                chosen = list(range(first, min(channels, first + step)))
                masked = zeroed(index, block_input, chosen, at_convolution[j])
                logits = dense(suffix(masked, index + 1))
                losses = ops.reshape(cross_entropy(logits, ops.tile(targets, (len(chosen),))), (len(chosen), batch))
                rises[chosen] = ops.convert_to_numpy(ops.mean(losses, axis=1)) - base
            sums[j] = rises if sums[j] is None else sums[j] + rises
        count += 1
    if count == 0:
        raise ValueError("estimate_channel_attention got no scoring batches")
    rises = [s / count for s in sums]
    attention = [attention_from_rises(r, temperature) for r in rises]
    return AttentionEstimate(attention, rises, head_accuracy, float(np.mean(base_losses)), time.perf_counter() - started)
