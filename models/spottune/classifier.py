"""SpotTune classifiers: a backbone whose blocks are routed, per image, between two copies.

    image [0, 255] -> "normalization" -+-> "stem" -> "block_01" ... "block_NN" -> "head" -> "classifier"
                                       |                ^ (RoutedBlock, reads routing[:, l])
                                       +-> "policy" [-> "global_k"] -> "gate" (routing [batch, L, 2])

(policy "stem_features": the policy reads the stem's output instead of the normalised image.)

The model has one output, the logits, so it compiles, fits, evaluates and exports like every other
adaptune classifier. The routing is read from the same layers through `routing_model(model)`, a
view that shares every weight and also returns the per-image decisions and probabilities.

Our reading of the authors' code (`gyhui14/spottune`, `main.py`): the stem (first convolution
and its BatchNorm) and the head (BatchNorm of ResNet-26, new classifier) have a single, trained
copy; only the blocks are doubled. The policy network sees the same normalised image as the
backbone and is trained by the same loss through the straight-through gate.

Importing this module registers every SpotTune layer, so a saved model loads with safe_mode on.

Method page: docs/methods/spottune.md.
"""

import keras
from keras import ops

from models.backbones.base import (
    CLASSIFIER_NAME,
    HEAD_NAME,
    NORMALIZATION_NAME,
    STEM_NAME,
    block_name,
    clone_layer,
)
from models.classifier import classify
from models.errors import ModelConfigError
from models.preprocessing import ChannelNormalization
from models.spottune.fixed_policy import FixedPolicy
from models.spottune.global_k_penalty import GlobalKPenalty
from models.spottune.global_policy import GlobalPolicy
from models.spottune.gumbel_softmax import INFERENCE_MODES, GumbelSoftmax, TopKGumbelGate
from models.spottune.policy_network import PolicyNetwork
from models.spottune.stem_policy import STEM_POLICY_WIDTHS, StemFeaturePolicy
from models.spottune.routed_block import FINETUNED_BN_MODES, FROZEN_BN_MODES, RoutedBlock, freeze_batchnorm, set_trainable
from models.spottune.names import GATE_NAME, GLOBAL_K_NAME, POLICY_NAME  # noqa: F401  (defined without Keras there)
from models.spottune.temperature_schedule import gumbel_gates

POLICIES = ("per_image", "stem_features", "global", "fixed")
PER_IMAGE_POLICY_WIDTHS = (32, 64, 128, 256)  # the authors' policy network


def build_spottune_classifier(
    backbone,
    num_classes,
    normalization=None,
    policy="per_image",
    temperature=5.0,
    hard=True,
    inference="deterministic",
    frozen_bn="frozen",
    bn="train",
    decisions=None,
    policy_widths=None,
    policy_image_size=None,
    global_k=None,
    top_k=None,
    train_stem=True,
    dropout=0.0,
    seed=None,
    name=None,
):
    """Builds a SpotTune classifier from a backbone.

    Args:
        backbone: a `models.backbones.base.Backbone`. Its stem and head are used as they are
            (shared, as in `assemble_classifier`); every block is cloned twice (frozen and
            fine-tuned copies), so the backbone's own blocks are left untouched.
        num_classes: size of the new Dense classifier.
        normalization: keyword arguments of `ChannelNormalization`, or None for the backbone's
            `source_normalization`.
        policy: "per_image" (the authors' policy network, on the image), "stem_features" (a light
            per-image policy on the stem's output, `StemFeaturePolicy`), "global" (one logit pair
            per block), or "fixed" (the 0/1 `decisions`, e.g. a global-k result or "last-k").
        temperature: initial Gumbel-softmax temperature (authors: 5, constant).
        hard: straight-through one-hot gate (True, the authors') or soft mixing (False).
        inference: "deterministic" (most likely path; default, for evaluation and export) or
            "sample" (draw the path as in training, as the authors' code does at test time).
        frozen_bn: how the frozen copies are frozen: "frozen" (default), "train" (authors'
            quirk: BatchNorm statistics update), "train_affine"; see `RoutedBlock`.
        bn: BatchNorm of the parts that train (stem, fine-tuned copies, head), the run's `--bn`:
            "train" or "frozen" (inference mode, pretrained statistics and affine parameters kept,
            as `finetune` does with the same flag); the policy network's own BatchNorm always trains.
        decisions: with policy="fixed", one 0/1 per block (1 = fine-tuned copy).
        policy_widths: widths of a per-image policy: stem and stage widths of "per_image" (default
            32 / 64 / 128 / 256), convolution widths of "stem_features" (default 16 / 32 / 64);
            None = that default.
        policy_image_size: side the "per_image" policy resizes its input to; None = no resize.
        global_k: None, or a dict with `target_k` (and optionally `count_weight`,
            `binarize_weight`): adds the global-k loss terms in training (`GlobalKPenalty`).
        top_k: None (a per-block Gumbel-softmax gate), or k with policy "global": a straight-through
            Gumbel top-k gate (`TopKGumbelGate`) routes exactly k blocks of every image to their
            fine-tuned copy (global-k's `--block-choice top_k`).
        train_stem: whether the stem is trained (the authors: yes).
        dropout: rate of a Dropout before the classifier (none when 0).
        seed: integer seed of the Gumbel noise, or None.
        name: model name; defaults to "<backbone>_spottune".

    Returns:
        a functional `keras.Model`, float RGB images in [0, 255] `[batch, None, None, 3]` ->
        logits `[batch, num_classes]`, with layers named normalization, stem, block_01..,
        head, [dropout,] classifier, policy, [global_k,] gate.

    Raises:
        ModelConfigError: bad policy, decisions, frozen_bn, inference, num_classes, or a
            policy_image_size with policy "stem_features".
    """
    num_blocks = backbone.num_blocks
    if policy not in POLICIES:
        raise ModelConfigError(f"SpotTune policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if frozen_bn not in FROZEN_BN_MODES:
        raise ModelConfigError(f"frozen_bn must be one of {', '.join(FROZEN_BN_MODES)}, got {frozen_bn!r}")
    if inference not in INFERENCE_MODES:
        raise ModelConfigError(f"inference must be one of {', '.join(INFERENCE_MODES)}, got {inference!r}")
    if num_classes is None or int(num_classes) < 1:
        raise ModelConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if policy == "fixed":
        if decisions is None or len(decisions) != num_blocks or any(int(d) not in (0, 1) for d in decisions):
            raise ModelConfigError(
                f"policy 'fixed' needs decisions: {num_blocks} values 0/1 (one per block), got {decisions!r}"
            )
    elif decisions is not None:
        raise ModelConfigError(f"decisions are only used with policy 'fixed', not {policy!r}")
    if policy_image_size is not None and policy == "stem_features":
        raise ModelConfigError("policy_image_size (--policy-image-size) does not apply to policy 'stem_features': it reads the stem's output")
    if top_k is not None:
        if policy != "global":
            raise ModelConfigError(f"top_k (a Gumbel top-k gate) needs policy 'global', not {policy!r}")
        if not 0 <= int(top_k) <= num_blocks:
            raise ModelConfigError(f"top_k must be in [0, {num_blocks}], got {top_k}")
    if global_k is not None:
        global_k = dict(global_k)
        unknown = set(global_k) - {"target_k", "count_weight", "binarize_weight"}
        if "target_k" not in global_k or unknown:
            raise ModelConfigError(
                "global_k needs target_k and accepts count_weight, binarize_weight; "
                f"got {sorted(global_k)}"
            )
        if not 0 <= int(global_k["target_k"]) <= num_blocks:
            raise ModelConfigError(f"global-k target_k must be in [0, {num_blocks}], got {global_k['target_k']}")
    norm_kwargs = normalization if normalization is not None else backbone.source_normalization
    if norm_kwargs is None:
        raise ModelConfigError(
            f"{backbone.name} has no source normalization: pass the dataset's mean and std as normalization"
        )

    # === Layers ===
    norm_layer = ChannelNormalization(**dict(norm_kwargs), name=NORMALIZATION_NAME)
    if policy == "per_image":
        widths = PER_IMAGE_POLICY_WIDTHS if policy_widths is None else policy_widths
        policy_layer = PolicyNetwork(num_blocks, widths=widths, image_size=policy_image_size, name=POLICY_NAME)
    elif policy == "stem_features":
        widths = STEM_POLICY_WIDTHS if policy_widths is None else policy_widths
        policy_layer = StemFeaturePolicy(num_blocks, widths=widths, name=POLICY_NAME)
    elif policy == "global":
        policy_layer = GlobalPolicy(num_blocks, name=POLICY_NAME)
    else:
        policy_layer = FixedPolicy(decisions, name=POLICY_NAME)
    penalty = GlobalKPenalty(**global_k, name=GLOBAL_K_NAME) if global_k is not None else None
    if top_k is not None:
        gate = TopKGumbelGate(int(top_k), temperature=temperature, inference=inference, seed=seed, name=GATE_NAME)
    else:
        gate = GumbelSoftmax(temperature=temperature, hard=hard, inference=inference, seed=seed, name=GATE_NAME)
    if bn not in FINETUNED_BN_MODES:
        raise ModelConfigError(f"bn must be one of {', '.join(FINETUNED_BN_MODES)}, got {bn!r}")
    set_trainable(backbone.stem, bool(train_stem))
    if bn == "frozen":
        freeze_batchnorm(backbone.stem)
        freeze_batchnorm(backbone.head)
    routed = [
        RoutedBlock(
            clone_layer(block, name=f"{block_name(index)}_pretrained"),
            clone_layer(block, name=f"{block_name(index)}_finetuned"),
            index=index,
            frozen_bn=frozen_bn,
            finetuned_bn=bn,
            name=block_name(index),
        )
        for index, block in enumerate(backbone.blocks)
    ]
    classifier = keras.layers.Dense(int(num_classes), name=CLASSIFIER_NAME)

    # === Functional Model ===
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = norm_layer(inputs)
    if reads_stem(policy_layer):
        h = backbone.stem(x)
        logits = policy_layer(h)
    else:  # the layer order of the models saved before the stem policy existed
        logits = policy_layer(x)
    if penalty is not None:
        logits = penalty(logits)
    routing = gate(logits)
    if not reads_stem(policy_layer):
        h = backbone.stem(x)
    for block in routed:
        h = block([h, routing])
    outputs = classify(backbone.head(h), classifier, dropout)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_spottune")


def reads_stem(policy_layer):
    """Whether a policy layer takes the stem's output (StemFeaturePolicy) rather than the normalised image."""
    return getattr(policy_layer, "input_source", "image") == "stem"


def routed_blocks(model):
    """The `RoutedBlock` layers block_01, block_02, ... of a SpotTune model, in order."""
    names = {layer.name: layer for layer in model.layers}
    blocks = []
    while isinstance(names.get(block_name(len(blocks))), RoutedBlock):
        blocks.append(names[block_name(len(blocks))])
    if not blocks:
        raise ModelConfigError(f"model {model.name!r} is not a SpotTune model: no RoutedBlock named block_01")
    return blocks


def routing_model(model):
    """A view of a SpotTune model that also returns its routing; it shares every layer and weight.

    Args:
        model: a model from `build_spottune_classifier`, or loaded from its `.keras` file.

    Returns:
        a `keras.Model` image -> dict with
        - "logits": `[batch, num_classes]`, the model's output;
        - "decisions": `[batch, L]`, the gate's choice per image and block (1 = fine-tuned copy):
          sampled in training or with `inference="sample"`, the most likely path otherwise;
        - "probabilities": `[batch, L]`, `softmax(policy logits)[..., 1]`, the probability that the
          gate picks the fine-tuned copy (independent of the temperature).
        The mean of "decisions" over a split is the per-block routing usage; the mean of
        "probabilities" over a batch is the v_l of the global-k terms.
    """
    policy_logits = model.get_layer(POLICY_NAME).output
    routing = model.get_layer(GATE_NAME).output
    outputs = {
        "logits": model.outputs[0],
        "decisions": ops.take(routing, 1, axis=-1),
        "probabilities": ops.take(ops.softmax(policy_logits, axis=-1), 1, axis=-1),
    }
    return keras.Model(model.input, outputs, name=f"{model.name}_routing")


def set_inference_mode(model, mode):
    """Switches every Gumbel gate of `model` to "deterministic" or "sample" inference.

    Drops the model's cached predict / test functions so the next `predict` / `evaluate` traces the
    new mode (the mode is read when the function is traced). Views from `routing_model` share the
    gates; call this on them too if they were already used.
    """
    if mode not in INFERENCE_MODES:
        raise ModelConfigError(f"inference must be one of {', '.join(INFERENCE_MODES)}, got {mode!r}")
    gates = gumbel_gates(model)
    if not gates:
        raise ModelConfigError(f"model {model.name!r} has no Gumbel gate")
    for gate in gates:
        gate.inference = mode
    for attribute in ("predict_function", "test_function"):
        if hasattr(model, attribute):
            setattr(model, attribute, None)
