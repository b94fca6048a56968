"""Routed (SpotTune) classifiers: routing maths, frozen copies, gradients, global-k terms, save/load."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.backbones.base import block_name
from models.errors import ModelConfigError
from models.spottune.global_k_penalty import (
    GlobalKPenalty,
    binarize_loss,
    count_loss,
    expected_fractions,
    routing_fractions,
)
from models.spottune.classifier import build_spottune_classifier, routed_blocks, routing_model, set_inference_mode
from models.spottune.routed_block import RoutedBlock
from models.spottune.temperature_schedule import TemperatureSchedule
from tests.fixtures import NORMALIZATION, images, perturb, tiny_backbone, tiny_spottune

FORBIDDEN_OPS = {"ArgMax", "ArgMin", "Bitcast", "BitwiseAnd"}


def head_features(model, x, routing=None, training=False):
    """Runs a SpotTune model layer by layer up to the head (eagerly), optionally forcing the routing."""
    h = model.get_layer("normalization")(x)
    if routing is None:
        routing = model.get_layer("gate")(model.get_layer("policy")(h, training=training), training=training)
    h = model.get_layer("stem")(h, training=training)
    for block in routed_blocks(model):
        h = block([h, routing], training=training)
    return keras.ops.convert_to_numpy(model.get_layer("head")(h, training=training))


def plain_features(backbone, x, normalization=NORMALIZATION):
    from models.preprocessing import ChannelNormalization

    h = backbone.stem(ChannelNormalization(**normalization)(x), training=False)
    for block in backbone.blocks:
        h = block(h, training=False)
    return keras.ops.convert_to_numpy(backbone.head(h, training=False))


# --- Structure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["per_image", "global", "fixed"])
def test_model_structure_and_outputs(policy):
    model = tiny_spottune(policy)
    names = [layer.name for layer in model.layers]
    for name in ("image", "normalization", "stem", "block_01", "block_02", "block_03", "head", "classifier"):
        assert name in names
    assert all(isinstance(model.get_layer(block_name(i)), RoutedBlock) for i in range(3))
    for training in (False, True):
        assert tuple(model(images(), training=training).shape) == (4, 5)
    outputs = routing_model(model)(images(), training=False)
    assert set(outputs) == {"logits", "decisions", "probabilities"}
    assert tuple(outputs["decisions"].shape) == (4, 3) and tuple(outputs["probabilities"].shape) == (4, 3)
    # Deterministic decisions are the likelier copy.
    decisions = keras.ops.convert_to_numpy(outputs["decisions"])
    probabilities = keras.ops.convert_to_numpy(outputs["probabilities"])
    np.testing.assert_array_equal(decisions, (probabilities > 0.5).astype("float32"))


def test_builder_rejects_bad_arguments():
    with pytest.raises(ModelConfigError):
        tiny_spottune("random")
    with pytest.raises(ModelConfigError):
        tiny_spottune("fixed", decisions=[0, 1])
    with pytest.raises(ModelConfigError):
        tiny_spottune("global", decisions=[0, 1, 1])
    with pytest.raises(ModelConfigError):
        tiny_spottune(frozen_bn="sometimes")
    with pytest.raises(ModelConfigError):
        tiny_spottune("global", global_k={"count_weight": 1.0})


# --- Routing maths -----------------------------------------------------------------------------


def test_routing_mixes_the_two_copies_per_image():
    backbone = tiny_backbone()
    model = tiny_spottune("per_image", backbone=backbone)
    block = model.get_layer("block_02")
    perturb(block.finetuned, scale=0.2, seed=0)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 4)).astype("float32")
    routing = np.zeros((4, 3, 2), "float32")
    routing[:, :, 0] = 1.0
    routing[[1, 3], 1] = [0.0, 1.0]  # images 1 and 3 use the fine-tuned copy of block 2
    out = keras.ops.convert_to_numpy(block([x, routing], training=False))
    pre = keras.ops.convert_to_numpy(block.pretrained(x, training=False))
    fine = keras.ops.convert_to_numpy(block.finetuned(x, training=False))
    np.testing.assert_array_equal(out[[0, 2]], pre[[0, 2]])
    np.testing.assert_array_equal(out[[1, 3]], fine[[1, 3]])
    assert not np.allclose(pre, fine)


@pytest.mark.parametrize("policy", ["fixed", "global"])
def test_policy_choosing_the_pretrained_copies_gives_the_pretrained_features(policy):
    backbone = tiny_backbone()
    expected = plain_features(backbone, images())
    if policy == "fixed":
        model = tiny_spottune("fixed", backbone=backbone, decisions=[0, 0, 0])
    else:
        model = tiny_spottune("global", backbone=backbone)
        model.get_layer("policy").logits.assign(np.tile([[50.0, -50.0]], (3, 1)))
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)  # the fine-tuned copies must play no part
    np.testing.assert_array_equal(head_features(model, images()), expected)
    # In training too (sampled gate, training-mode call): each block gives exactly F_l(x).
    routing = model.get_layer("gate")(model.get_layer("policy")(images()), training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(routing)[..., 1], 0.0)
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 4)).astype("float32")
    block = model.get_layer("block_01")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(block([x, routing], training=True)),
        keras.ops.convert_to_numpy(backbone.blocks[0](x, training=False)),
    )


# --- Gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["per_image", "global"])
@pytest.mark.parametrize("frozen_bn", ["frozen", "train"])
def test_gradients_reach_the_policy_through_the_straight_through_gate(policy, frozen_bn):
    model = tiny_spottune(policy, frozen_bn=frozen_bn)
    policy_layer = model.get_layer("policy")
    if policy == "global":
        policy_layer.logits.assign(np.random.default_rng(0).normal(size=(3, 2)).astype("float32"))
    x = images(8)

    def largest_policy_gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x, training=True)))
        gradients = tape.gradient(loss, policy_layer.trainable_weights)
        assert all(g is not None for g in gradients)
        return max(float(tf.reduce_max(tf.abs(g))) for g in gradients)

    if frozen_bn == "train":
        # Both copies equal and in the same BatchNorm mode: the choice changes nothing, no gradient.
        assert largest_policy_gradient() == 0.0
    else:
        # Frozen copy with moving statistics, fine-tuned copy with batch statistics: they differ.
        assert largest_policy_gradient() > 1e-6
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)
    assert largest_policy_gradient() > 1e-6


# --- Frozen copies -----------------------------------------------------------------------------


def _fit_one_step(model):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images(8), np.arange(8) % 5, batch_size=8, epochs=1, verbose=0)


def _values(layer, names):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in layer.weights if v.name in names}


@pytest.mark.parametrize("frozen_bn", ["frozen", "train", "train_affine"])
def test_frozen_copies_stay_frozen(frozen_bn, tmp_path):
    model = tiny_spottune("per_image" if frozen_bn == "train" else "global", frozen_bn=frozen_bn)
    block = model.get_layer("block_01")
    trainable_names = {v.name for v in block.pretrained.trainable_weights}
    assert trainable_names == ({"gamma", "beta"} if frozen_bn == "train_affine" else set())
    assert block.pretrained.trainable == (frozen_bn != "frozen")
    count = len(model.trainable_variables)
    kernels = _values(block.pretrained, ("kernel",))
    affine = _values(block.pretrained, ("gamma", "beta"))
    moving = _values(block.pretrained, ("moving_mean", "moving_variance"))
    tuned = _values(block.finetuned, ("kernel",))
    _fit_one_step(model)

    def changed(before):
        after = _values(block.pretrained, ("kernel", "gamma", "beta", "moving_mean", "moving_variance"))
        return any(not np.array_equal(after[k], v) for k, v in before.items())

    assert not changed(kernels)
    assert changed(affine) == (frozen_bn == "train_affine")
    assert changed(moving) == (frozen_bn != "frozen")  # the authors' quirk: statistics update
    after = _values(block.finetuned, ("kernel",))
    assert any(not np.array_equal(after[k], v) for k, v in tuned.items())
    # Freezing and unfreezing the whole model does not unfreeze the frozen copies.
    model.trainable = False
    assert model.trainable_variables == []
    model.trainable = True
    assert len(model.trainable_variables) == count
    # The flags survive a save / load round trip.
    model.save(tmp_path / "routed.keras")
    loaded = keras.saving.load_model(tmp_path / "routed.keras", safe_mode=True)
    assert len(loaded.trainable_variables) == count
    assert loaded.get_layer("block_01").frozen_bn == frozen_bn


@pytest.mark.parametrize("policy", ["per_image", "global"])
def test_bn_frozen_keeps_every_backbone_batchnorm_in_inference_mode(policy, tmp_path):
    """`--bn frozen` (the ImageNet recipe) reaches SpotTune: stem, fine-tuned copies and head.

    At initialisation the two copies hold the same weights; with every backbone BatchNorm in
    inference mode, training-mode outputs then equal inference outputs whatever the routing, and
    a training step moves no BatchNorm statistic or affine parameter of the backbone, while the
    convolutions of the fine-tuned copies and the policy's own BatchNorm still train.
    """
    backbone = tiny_backbone()
    model = tiny_spottune(policy, backbone=backbone, bn="frozen")
    x = images()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=True)), keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5
    )
    backbone_layers = [model.get_layer("stem"), model.get_layer("head")] + [b.finetuned for b in routed_blocks(model)]
    statistics = {}
    for layer in backbone_layers:
        statistics.update(_values(layer, ("moving_mean", "moving_variance", "gamma", "beta")))
    assert statistics, "the tiny backbone has BatchNorm layers to check"
    tuned = _values(model.get_layer("block_01").finetuned, ("kernel",))
    _fit_one_step(model)
    after = {}
    for layer in backbone_layers:
        after.update(_values(layer, ("moving_mean", "moving_variance", "gamma", "beta")))
    assert all(np.array_equal(after[k], v) for k, v in statistics.items())
    moved = _values(model.get_layer("block_01").finetuned, ("kernel",))
    assert any(not np.array_equal(moved[k], v) for k, v in tuned.items())
    # The flag survives a save / load round trip, and model.trainable = True does not undo it.
    model.save(tmp_path / "bn_frozen.keras")
    loaded = keras.saving.load_model(tmp_path / "bn_frozen.keras", safe_mode=True)
    loaded.trainable = True
    assert loaded.get_layer("block_01").finetuned_bn == "frozen"
    finetuned_bns = [
        sub
        for sub in loaded.get_layer("block_01").finetuned._flatten_layers(include_self=True, recursive=True)
        if isinstance(sub, keras.layers.BatchNormalization)
    ]
    assert finetuned_bns and not any(bn.trainable for bn in finetuned_bns)


def test_bn_train_default_lets_the_finetuned_batchnorm_use_batch_statistics():
    model = tiny_spottune("global")
    x = images()
    training = keras.ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(training, keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)


# --- Global-k terms ----------------------------------------------------------------------------


def test_global_k_terms_match_numpy():
    rng = np.random.default_rng(3)
    v = rng.uniform(0.01, 0.99, size=7).astype("float32")
    assert float(count_loss(v, 3)) == pytest.approx((v.sum() - 3) ** 2, rel=1e-5)
    assert float(binarize_loss(v)) == pytest.approx(np.sum(-v * np.log(v)), rel=1e-5)
    assert float(binarize_loss(np.array([0.0, 1.0, 0.0], "float32"))) == 0.0
    logits = rng.normal(size=(6, 7, 2)).astype("float32")
    probabilities = np.exp(logits[..., 1]) / np.exp(logits).sum(axis=-1)
    np.testing.assert_allclose(expected_fractions(logits), probabilities.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(routing_fractions(probabilities), probabilities.mean(axis=0), rtol=1e-6)
    # The layer adds count_weight * count + binarize_weight * binarize, in training only.
    penalty = GlobalKPenalty(target_k=2, count_weight=0.3, binarize_weight=0.05)
    out = penalty(logits, training=False)
    assert penalty.losses == []
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), logits)
    penalty(logits, training=True)
    v = probabilities.mean(axis=0)
    expected = 0.3 * (v.sum() - 2) ** 2 + 0.05 * np.sum(-v * np.log(v))
    assert float(penalty.losses[0]) == pytest.approx(expected, rel=1e-5)


def test_global_k_penalty_gradient_reaches_the_global_logits():
    model = tiny_spottune("global", global_k={"target_k": 1, "count_weight": 1.0, "binarize_weight": 0.1})
    logits = model.get_layer("policy").logits
    with tf.GradientTape() as tape:
        model(images(), training=True)
        loss = tf.add_n(model.losses)
    assert len(model.losses) == 1
    v = np.full(3, 0.5)
    assert float(loss) == pytest.approx((v.sum() - 1) ** 2 + 0.1 * np.sum(-v * np.log(v)), rel=1e-5)
    gradient = tape.gradient(loss, logits).numpy()
    assert np.all(gradient[:, 1] > 0) and np.all(gradient[:, 0] < 0)  # sum v = 1.5 > k: less fine-tuning
    model(images(), training=False)
    assert model.losses == []


def test_fit_with_global_k_and_annealing():
    model = tiny_spottune("global", global_k={"target_k": 1, "count_weight": 5.0, "binarize_weight": 0.0})
    before = keras.ops.convert_to_numpy(model.get_layer("policy").logits).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = TemperatureSchedule(5.0, "exponential", rate=1.0, minimum=0.5)
    history = model.fit(images(8), np.arange(8) % 5, batch_size=4, epochs=2, verbose=0, callbacks=[schedule])
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert history.history["temperature"] == pytest.approx([5.0, 5.0 * math.exp(-1.0)])
    after = keras.ops.convert_to_numpy(model.get_layer("policy").logits)
    margin_before = before[:, 1] - before[:, 0]
    margin_after = after[:, 1] - after[:, 0]
    assert np.all(margin_after < margin_before)  # pushed towards k = 1 of 3 blocks


# --- Inference modes and export graph ----------------------------------------------------------


def test_set_inference_mode_switches_predict():
    model = tiny_spottune("global")  # logits 0: p = 0.5, deterministic path = all pretrained
    view = routing_model(model)
    x = images(16)
    deterministic = view.predict(x, verbose=0)["decisions"]
    np.testing.assert_array_equal(deterministic, 0.0)
    set_inference_mode(model, "sample")
    set_inference_mode(view, "sample")
    sampled = view.predict(x, verbose=0)["decisions"]
    assert 0 < sampled.sum() < sampled.size
    assert model.get_layer("gate").inference == "sample"
    set_inference_mode(view, "deterministic")
    np.testing.assert_array_equal(view.predict(x, verbose=0)["decisions"], deterministic)
    with pytest.raises(ModelConfigError):
        set_inference_mode(model, "argmax")


@pytest.mark.parametrize("policy", ["per_image", "global"])
def test_deterministic_graph_has_no_argmax_bitwise_or_random_ops(policy):
    model = tiny_spottune(policy)
    function = tf.function(lambda x: model(x, training=False))
    graph = function.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32)).graph
    types = {op.type for op in graph.get_operations()}
    assert not types & FORBIDDEN_OPS, types & FORBIDDEN_OPS
    assert not any("Random" in t for t in types), types


# --- Save / load -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, kwargs",
    [
        ("per_image", {"policy_image_size": 6}),
        ("global", {"global_k": {"target_k": 2}, "temperature": 2.0}),
        ("fixed", {"frozen_bn": "train"}),
        ("per_image", {"backbone": "functional", "dropout": 0.2}),
    ],
)
def test_save_and_load_round_trip(tmp_path, policy, kwargs):
    if kwargs.get("backbone") == "functional":
        kwargs = {**kwargs, "backbone": tiny_backbone(functional_blocks=True)}
    model = tiny_spottune(policy, **kwargs)
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)
    if policy == "global":
        model.get_layer("policy").logits.assign(np.random.default_rng(0).normal(size=(3, 2)).astype("float32"))
        model.get_layer("gate").temperature.assign(0.9)
    x = images(4, 10)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "spottune.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    assert loaded.get_layer("gate").get_config() == model.get_layer("gate").get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.get_layer("gate").temperature),
        keras.ops.convert_to_numpy(model.get_layer("gate").temperature),
    )
    view = routing_model(loaded)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(view(x)["logits"]), expected)


# --- Real backbone (ResNet-20) ------------------------------------------------------------------


def test_resnet20_spottune_builds_and_saves(tmp_path):
    from models.backbones import build_backbone

    model = build_spottune_classifier(
        build_backbone("resnet20", weights="none"), 10, NORMALIZATION, policy_widths=(8, 8, 8, 8), seed=0
    )
    assert len(routed_blocks(model)) == 9
    x = images(2, 32)
    outputs = routing_model(model)(x, training=True)
    assert tuple(outputs["logits"].shape) == (2, 10) and tuple(outputs["decisions"].shape) == (2, 9)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "resnet20.keras")
    loaded = keras.saving.load_model(tmp_path / "resnet20.keras", safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


def test_resnet20_pretrained_copies_give_the_pretrained_features(shared_dir):
    from models.backbones import build_backbone

    reference = build_backbone("resnet20", weights="default")
    expected = plain_features(reference, images(4, 32), reference.source_normalization)
    model = build_spottune_classifier(build_backbone("resnet20", weights="default"), 10, policy="fixed", decisions=[0] * 9)
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)
    np.testing.assert_array_equal(head_features(model, images(4, 32)), expected)
