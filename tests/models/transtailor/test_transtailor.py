"""TransTailor (models/transtailor/): the flat network, channel groups, surgery (a zero-scale filter removed
changes nothing), MACs and parameters as reported, the rounds and their stopping rule, export agreement.

Method page: docs/methods/transtailor.md.
"""

import keras
import numpy as np
import pytest

from models.backbones.base import Backbone, block_name, build_parts
from models.backbones.conv_stem import ConvStem
from models.backbones.pooling_head import PoolingHead
from models.classifier import assemble_classifier
from models.transtailor.filter_scale import FilterScale
from models.transtailor.flat_network import build_flat_classifier
from models.transtailor.flops import count_macs, macs_by_layer
from models.transtailor.rounds import tailor
from models.transtailor.surgery import channel_groups, rebuild
from tests import fixtures as fx


def _inverted_residual_backbone(seed=0):
    """A MobileNetV2 in miniature: two inverted-residual blocks (expand, depthwise, project; the second with an Add)."""
    keras.utils.set_random_seed(seed)
    stem = ConvStem(4, 3, activation="relu", name="stem")
    blocks = []
    for index, (channels, out, strides) in enumerate(((4, 6, 2), (6, 6, 1))):
        inputs = keras.Input((None, None, channels))
        x = keras.layers.Conv2D(12, 1, use_bias=False, name=f"b{index}_expand")(inputs)
        x = keras.layers.BatchNormalization(name=f"b{index}_expand_BN")(x)
        x = keras.layers.ReLU(6.0, name=f"b{index}_expand_relu")(x)
        x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"b{index}_depthwise")(x)
        x = keras.layers.BatchNormalization(name=f"b{index}_depthwise_BN")(x)
        x = keras.layers.ReLU(6.0, name=f"b{index}_depthwise_relu")(x)
        x = keras.layers.Conv2D(out, 1, use_bias=False, name=f"b{index}_project")(x)
        x = keras.layers.BatchNormalization(name=f"b{index}_project_BN")(x)
        if channels == out and strides == 1:
            x = keras.layers.Add(name=f"b{index}_add")([inputs, x])
        blocks.append(keras.Model(inputs, x, name=block_name(index)))
    head = PoolingHead(name="head")
    feature_dim = build_parts(stem, blocks, head)
    rng = np.random.default_rng(seed)
    for layer in [stem, *blocks]:
        for variable in layer.weights:
            if variable.name == "moving_mean":
                variable.assign(rng.normal(scale=0.3, size=variable.shape))
            elif variable.name == "moving_variance":
                variable.assign(rng.uniform(0.5, 2.0, size=variable.shape))
            elif variable.name == "beta":
                variable.assign(rng.normal(scale=0.3, size=variable.shape))
    return Backbone("tiny_mbv2", stem, blocks, head, feature_dim, [[0], [1]], dict(fx.NORMALIZATION), None, None, 8)


BACKBONES = {"basic_block": fx.tiny_backbone, "inverted_residual": _inverted_residual_backbone}


def _flat(kind):
    backbone = BACKBONES[kind]()
    return build_flat_classifier(backbone, fx.NUM_CLASSES, fx.NORMALIZATION), backbone


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_the_flat_network_computes_the_assembled_classifier(kind):
    model, backbone = _flat(kind)
    plain = assemble_classifier(backbone, fx.NUM_CLASSES, normalization=fx.NORMALIZATION)
    plain.get_layer("classifier").set_weights(model.get_layer("classifier").get_weights())
    images = fx.images()
    np.testing.assert_allclose(model(images, training=False), plain(images, training=False), rtol=1e-5, atol=1e-6)


def test_channel_groups_stay_inside_blocks_and_avoid_residual_channels():
    basic, _ = _flat("basic_block")
    assert [(g.producer, g.consumer, g.channels) for g in channel_groups(basic)] == [
        ("block_01_conv1", "block_01_conv2", 4), ("block_02_conv1", "block_02_conv2", 8), ("block_03_conv1", "block_03_conv2", 8)
    ]
    inverted, _ = _flat("inverted_residual")
    groups = channel_groups(inverted)
    assert [(g.producer, g.consumer, g.scale_after) for g in groups] == [
        ("block_01_b0_expand", "block_01_b0_project", "block_01_b0_depthwise_BN"),
        ("block_02_b1_expand", "block_02_b1_project", "block_02_b1_depthwise_BN"),
    ]  # the project outputs (block outputs, one of them residual) are never pruned


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_pruning_filters_whose_scale_is_zero_leaves_the_outputs_unchanged(kind, tmp_path):
    model, _ = _flat(kind)
    scaled = rebuild(model, insert_scales=True)
    images = fx.images()
    np.testing.assert_allclose(scaled(images, training=False), model(images, training=False), rtol=1e-6, atol=1e-6)
    rng = np.random.default_rng(3)
    keep = {}
    for group in channel_groups(model):
        alpha = rng.uniform(0.5, 1.5, group.channels).astype("float32")
        dropped = rng.choice(group.channels, size=group.channels // 2, replace=False)
        alpha[dropped] = 0.0
        scaled.get_layer(group.scale_name).alpha.assign(alpha)
        keep[group.producer] = [c for c in range(group.channels) if c not in set(dropped)]
    pruned = rebuild(scaled, keep=keep, fold_scales=True)
    assert not any(isinstance(layer, FilterScale) for layer in pruned.layers)
    assert [g.channels for g in channel_groups(pruned)] == [len(k) for k in keep.values()]
    np.testing.assert_allclose(pruned(images, training=False), scaled(images, training=False), rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(images, training=False), pruned(images, training=False), rtol=1e-6, atol=1e-6)


def _basic_block_macs_and_parameters(inner, size=8):
    """MACs and parameters of `fx.tiny_backbone()`'s flat classifier, counted by hand, with `inner` channels
    between conv1 and conv2 of blocks 1..3 (widths 4 / 8 strided / 8, stem 4, 3 classes)."""
    stem = size * size * 9 * 3 * 4
    b1 = size * size * 9 * 4 * inner[0] + size * size * 9 * inner[0] * 4
    half = size // 2
    b2 = half * half * 9 * 4 * inner[1] + half * half * 9 * inner[1] * 8
    b3 = half * half * 9 * 8 * inner[2] + half * half * 9 * inner[2] * 8
    dense = 8 * 3
    macs = stem + b1 + b2 + b3 + dense
    params = (27 * 4 + 4 * 4)  # stem conv (no bias) + BN (4 per channel)
    params += 9 * 4 * inner[0] + 4 * inner[0] + 9 * inner[0] * 4 + 4 * 4
    params += 9 * 4 * inner[1] + 4 * inner[1] + 9 * inner[1] * 8 + 4 * 8
    params += 9 * 8 * inner[2] + 4 * inner[2] + 9 * inner[2] * 8 + 4 * 8
    params += 8 * 3 + 3
    return macs, params


def _fake_round_tools(accuracies):
    calls = {"fit": 0}

    def fit(model, epochs):
        calls["fit"] += 1

    sequence = iter(accuracies)

    def evaluate(model):
        return next(sequence)

    def batches():
        return [(fx.images(batch=4, seed=s), fx.labels(batch=4, seed=s)) for s in range(2)]

    return fit, evaluate, batches, calls


def test_rounds_reach_the_target_and_report_the_macs_and_parameters_the_network_has():
    model, _ = _flat("basic_block")
    fx.perturb(model.get_layer("classifier"), scale=0.5)
    fit, evaluate, batches, calls = _fake_round_tools([0.8] * 20)
    pruned, records = tailor(model, fit, evaluate, batches, image_size=8, bn="train", target_ratio=0.6, max_drop=0.3, step=0.1)
    base = count_macs(model, 8)
    assert base == _basic_block_macs_and_parameters([4, 8, 8])[0] and model.count_params() == _basic_block_macs_and_parameters([4, 8, 8])[1]
    assert records[-1]["macs"] <= 0.6 * base < records[-2]["macs"]
    assert all(0 < b["macs"] < a["macs"] for a, b in zip(records, records[1:]))
    assert calls["fit"] == 2 * (len(records) - 1)  # scales, then fine-tuning, each round
    final = records[-1]
    inner = [final["channels"][f"block_0{i}_conv1"] for i in (1, 2, 3)]
    assert (final["macs"], final["parameters"]) == _basic_block_macs_and_parameters(inner)
    assert (count_macs(pruned, 8), pruned.count_params()) == (final["macs"], final["parameters"])
    assert final["flops_ratio"] == pytest.approx(final["macs"] / base, abs=1e-6)
    assert sum(macs_by_layer(pruned, 8).values()) == final["macs"]


def test_a_round_that_loses_more_than_max_drop_points_is_undone():
    model, _ = _flat("basic_block")
    # validation accuracy: unpruned, then per round after pruning and after fine-tuning
    fit, evaluate, batches, _ = _fake_round_tools([0.80, 0.5, 0.799, 0.1, 0.79])
    pruned, records = tailor(model, fit, evaluate, batches, image_size=8, bn="train", target_ratio=0.1, max_drop=0.3, step=0.1)
    assert [r["kept"] for r in records] == [True, True, False]
    assert "previous round" in records[-1]["stopped"]
    assert count_macs(pruned, 8) == records[1]["macs"]
    assert [r.get("validation_accuracy_before_finetuning") for r in records] == [None, 0.5, 0.1]


def test_the_pruned_model_exports_and_agrees_with_keras_in_float(tmp_path):
    from export import graph, onnx_export, tflite
    from export.verify import OnnxRunner, TFLiteRunner, keras_logits, run_all

    model, _ = _flat("inverted_residual")
    fit, evaluate, batches, _ = _fake_round_tools([0.8] * 20)
    pruned, _ = tailor(model, fit, evaluate, batches, image_size=8, bn="train", target_ratio=0.7, max_drop=0.3, step=0.2)
    assert count_macs(pruned, 8) < count_macs(model, 8)
    images = (np.random.default_rng(0).uniform(size=(4, 8, 8, 3)) * 255).astype("uint8")
    expected = keras_logits(pruned, images)
    function, control_flow = graph.serving_function(pruned)
    saved = graph.write_saved_model(pruned, function, str(tmp_path / "saved_model"), 8)
    tflite_path = tmp_path / "model.tflite"
    tflite_path.write_bytes(tflite.convert(saved, "none"))
    onnx_path = str(tmp_path / "model.onnx")
    onnx_export.convert_saved_model(saved, onnx_path, 8)
    assert not control_flow
    np.testing.assert_allclose(run_all(TFLiteRunner(str(tflite_path)), images), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(run_all(OnnxRunner(onnx_path), images), expected, atol=1e-4, rtol=0)
