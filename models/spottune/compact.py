"""From a routed (SpotTune) model with input-independent decisions to a plain classifier.

After global-k training each block keeps one copy: the fine-tuned one where the block's
probability of using it rounds to 1, the pretrained one elsewhere (docs/methods/global_k.md). The
result has the layer names of `models.classifier.assemble_classifier` (normalization, stem,
block_01.., head, [dropout,] classifier), one backbone's parameters and one backbone's cost, and
computes exactly what the routed model computes at deterministic inference.
"""

import keras
from keras import ops

from models.backbones.base import CLASSIFIER_NAME, HEAD_NAME, NORMALIZATION_NAME, STEM_NAME, block_name, clone_layer
from models.classifier import DROPOUT_NAME
from models.errors import ModelConfigError
from models.spottune.classifier import GATE_NAME, POLICY_NAME, routed_blocks
from models.spottune.fixed_policy import FixedPolicy
from models.spottune.global_policy import GlobalPolicy
from models.spottune.gumbel_softmax import TopKGumbelGate, hard_one_hot
from models.spottune.routed_block import set_trainable


def fixed_decisions(model, k=None):
    """The per-block decisions of a routed model whose policy does not depend on the input.

    Args:
        model: a SpotTune model with a "global" or "fixed" policy.
        k: None for the deterministic decisions (fine-tuned where its probability is above 0.5,
            i.e. where v_l rounds to 1; ties go to the pretrained copy; with a Gumbel top-k gate,
            its k blocks of largest margin), or an integer to keep exactly the k blocks most likely
            to use their fine-tuned copy (ties to the earlier block). With k, the compact model may
            differ from the routed model's deterministic path (not with a top-k gate of that k).

    Returns:
        a list of 0/1 ints, one per block (1 = fine-tuned copy).

    Raises:
        ModelConfigError: the policy is per-image (its decisions depend on the image) or k is bad.
    """
    policy = model.get_layer(POLICY_NAME)
    if isinstance(policy, FixedPolicy):
        if k is not None:
            raise ModelConfigError("k only applies to a learned global policy, not to fixed decisions")
        return list(policy.decisions)
    if not isinstance(policy, GlobalPolicy):
        raise ModelConfigError(
            f"model {model.name!r} has a {type(policy).__name__}: its decisions depend on the image, "
            "so it has no compact form (use policy 'global' or 'fixed')"
        )
    logits = ops.convert_to_numpy(policy.logits)
    gate = {layer.name: layer for layer in model.layers}.get(GATE_NAME)
    if k is None and isinstance(gate, TopKGumbelGate):
        k = gate.top_k  # the deterministic path of a top-k gate: its k largest margins
    if k is None:
        return [int(d) for d in ops.convert_to_numpy(hard_one_hot(ops.convert_to_tensor(logits)))[:, 1]]
    k = int(k)
    if not 0 <= k <= len(logits):
        raise ModelConfigError(f"k must be in [0, {len(logits)}], got {k}")
    margin = logits[:, 1] - logits[:, 0]  # log-odds of the fine-tuned copy
    order = sorted(range(len(margin)), key=lambda i: (-margin[i], i))
    chosen = set(order[:k])
    return [int(i in chosen) for i in range(len(margin))]


def _copy(layer, name):
    clone = clone_layer(layer, name=name)
    if clone.name != name:
        clone.name = name  # functional sub-models are cloned under their own name
    set_trainable(clone, True)
    return clone


def compact_classifier(model, decisions=None, name=None):
    """A plain classifier with one copy per block, taken from a routed model.

    Args:
        model: a SpotTune model (built by `build_spottune_classifier` or loaded from `.keras`).
        decisions: one 0/1 per block; None for `fixed_decisions(model)`.
        name: model name; defaults to "<model name>_compact".

    Returns:
        a new functional `keras.Model` (independent copies of the weights, all trainable) with the
        layers normalization, stem, block_01.., head, [dropout,] classifier: the fine-tuned copy of
        block l where decisions[l] is 1, the pretrained copy elsewhere.

    Raises:
        ModelConfigError: decisions missing for a per-image policy, or of the wrong length.
    """
    blocks = routed_blocks(model)
    if decisions is None:
        decisions = fixed_decisions(model)
    decisions = [int(d) for d in decisions]
    if len(decisions) != len(blocks) or any(d not in (0, 1) for d in decisions):
        raise ModelConfigError(f"decisions must be {len(blocks)} values 0/1, got {decisions!r}")
    names = {layer.name for layer in model.layers}

    # === Layers ===
    norm_layer = _copy(model.get_layer(NORMALIZATION_NAME), NORMALIZATION_NAME)
    stem = _copy(model.get_layer(STEM_NAME), STEM_NAME)
    kept = [
        _copy(block.finetuned if decision else block.pretrained, block_name(index))
        for index, (block, decision) in enumerate(zip(blocks, decisions))
    ]
    head = _copy(model.get_layer(HEAD_NAME), HEAD_NAME)
    dropout = _copy(model.get_layer(DROPOUT_NAME), DROPOUT_NAME) if DROPOUT_NAME in names else None
    classifier = _copy(model.get_layer(CLASSIFIER_NAME), CLASSIFIER_NAME)

    # === Functional Model ===
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = stem(norm_layer(inputs))
    for block in kept:
        x = block(x)
    x = head(x)
    if dropout is not None:
        x = dropout(x)
    outputs = classifier(x)
    return keras.Model(inputs, outputs, name=name or f"{model.name}_compact")


def chosen_blocks(model, k=None):
    """(decisions, forced): the routed model's own decisions, or its k most likely blocks where they do not number k.

    `forced` is True when the learned decisions did not number k and the top k were taken instead
    (metrics.json's `forced_top_k`); never with a Gumbel top-k gate of that k, whose decisions are its top k.
    """
    decisions = fixed_decisions(model)
    forced = k is not None and sum(decisions) != int(k)
    if forced:
        decisions = fixed_decisions(model, k=k)
    return decisions, bool(forced)


def freeze_to_blocks(model, decisions, bn="train"):
    """Last-k-style freezing of a compact (plain) classifier on the chosen blocks.

    The blocks whose decision is 1, the head and the classifier train (their BatchNorm as `bn`
    says: "train" or "frozen", `models.strategies.freezing.set_trainable`); the normalization, the
    stem and every other block are frozen (inference-mode BatchNorm, weights fixed), so they keep
    the pretrained weights (the stem: as the routed training left it) and a task delta of the
    result is the k blocks, the head and the classifier.

    Returns:
        the names of the trainable layers, in model order.
    """
    from models.strategies.freezing import set_trainable as set_layer_trainable

    trained = {block_name(i) for i, d in enumerate(decisions) if int(d)} | {HEAD_NAME, CLASSIFIER_NAME}
    names = []
    for layer in model.layers:
        set_layer_trainable(layer, layer.name in trained, bn)
        if layer.name in trained:
            names.append(layer.name)
    return names
