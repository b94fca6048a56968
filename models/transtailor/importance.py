"""TransTailor's target-aware filter importance and the global choice of the filters to remove.

    beta_f = (1 / B) * sum_batches | dL/d(alpha_f) * alpha_f |

L the target cross-entropy of one training batch (mean over its images), alpha_f the scale of filter f
(`FilterScale`), accumulated over the whole training split (an unofficial port that uses one batch is
wrong: Liu et al., AAAI 2021, Algorithm 1). `dL/d(alpha_f) * alpha_f = sum_{h,w} dL/dz * z` with
z = alpha_f * out_f: the first-order Taylor estimate of the loss change when the filter is removed.
The network runs in inference mode (weights and BatchNorm frozen). Scores are ranked globally across
layers, raw (the paper ranks globally and names no per-layer normalisation).
"""

import numpy as np

from models.transtailor.filter_scale import FilterScale


def filter_scales(model):
    return [layer for layer in model.layers if isinstance(layer, FilterScale)]


def taylor_importance(model, dataset, max_batches=None):
    """{FilterScale name: beta per filter} over a finite dataset of (images, labels).

    Uses `tf.GradientTape` (keras.ops has no gradient API): TensorFlow backend only, as the Fisher estimate.
    """
    import tensorflow as tf  # gradients: the TensorFlow backend's tape

    from models.transfer_trainer import logits_of

    scales = filter_scales(model)
    variables = [scale.alpha for scale in scales]
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    batches = 0
    for step, (images, labels) in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        with tf.GradientTape() as tape:
            logits = logits_of(model(images, training=False))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits))
        grads = tape.gradient(loss, variables)
        for index, (grad, variable) in enumerate(zip(grads, variables)):
            sums[index] += np.abs(np.asarray(grad) * np.asarray(variable))
        batches += 1
    return {scale.name: total / max(batches, 1) for scale, total in zip(scales, sums)}


def channel_costs(groups, macs):
    """{producer: multiply-accumulates one channel of the group costs}: its filter, its chain, its input
    channel in the consumer (each layer's MACs are linear in the group's channels)."""
    costs = {}
    for group in groups:
        names = [group.producer, group.consumer] + [m for m, kind in group.members if kind == "depthwise"]
        costs[group.producer] = sum(macs.get(name, 0) for name in names) / group.channels
    return costs


def choose_removals(groups, scores, costs, budget, min_channels=1):
    """Remove the globally least important filters until `budget` multiply-accumulates are gone.

    Args:
        groups: the `ChannelGroup`s.
        scores: {scale name: beta per filter}.
        costs: {producer: MACs per channel} (`channel_costs`).
        budget: MACs to remove this round.
        min_channels: channels every group keeps (our reading: at least one, so no layer disappears).

    Returns:
        ({producer: indices kept}, MACs removed, filters removed).
    """
    candidates = []
    for group in groups:
        for channel, score in enumerate(scores[group.scale_name]):
            candidates.append((float(score), group.producer, channel))
    candidates.sort()
    removed = {group.producer: set() for group in groups}
    sizes = {group.producer: group.channels for group in groups}
    gone, count = 0.0, 0
    for score, producer, channel in candidates:
        if gone >= budget:
            break
        if sizes[producer] - len(removed[producer]) <= min_channels:
            continue
        removed[producer].add(channel)
        gone += costs[producer]
        count += 1
    keep = {p: [c for c in range(sizes[p]) if c not in removed[p]] for p in sizes if removed[p]}
    return keep, gone, count


def normalized_importance(scores, keep, groups):
    """{scale name: beta of the kept filters / their mean}: the fixed factors of importance-aware fine-tuning.

    Our reading: raw Taylor scores are on an arbitrary scale (1e-5 is typical), so multiplying outputs by
    them would silence the network; divided by their layer's mean they keep each layer's output scale and
    weight its filters by importance. A layer whose kept scores are all zero gets factors of 1.
    """
    factors = {}
    for group in groups:
        beta = np.asarray(scores[group.scale_name], np.float64)
        if group.producer in keep:
            beta = beta[np.asarray(keep[group.producer])]
        mean = float(beta.mean()) if beta.size else 0.0
        factors[group.scale_name] = (beta / mean).astype("float32") if mean > 0 else np.ones_like(beta, "float32")
    return factors
