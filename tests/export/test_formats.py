"""Float TFLite and ONNX files compute what the Keras model computes (uint8 images in, logits out)."""

import os

import numpy as np
import onnx
import pytest

from export import graph, onnx_export, tflite
from export.verify import OnnxRunner, TFLiteRunner, run_all
from models.backbones import build_backbone
from models.classifier import assemble_classifier
from tests.export.helpers import (
    assert_close,
    global_k_models,
    keras_logits,
    mixed_policy,
    plain_resnet20,
    routed_resnet20,
    uint8_images,
    varied_images,
)

DATASET_STATS = {"mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25]}


def _plain(name, size):
    weights = "none" if name in ("resnet26", "squeezenet1_1") else "default"
    backbone = build_backbone(name, weights=weights)
    normalization = DATASET_STATS if backbone.source_normalization is None else None
    return assemble_classifier(backbone, 7, normalization), size


def _export_float(model, size, tmp_path):
    """(tflite path, onnx path, has control flow) of the serving graph of `model`."""
    function, control_flow = graph.serving_function(model)
    saved = graph.write_saved_model(model, function, str(tmp_path / "saved_model"), size)
    tflite_bytes = tflite.convert(saved, "none")
    tflite_path = tmp_path / "model.tflite"
    tflite_path.write_bytes(tflite_bytes)
    onnx_path = str(tmp_path / "model.onnx")
    if control_flow:
        onnx_export.convert_tflite(tflite_bytes, onnx_path)
    else:
        onnx_export.convert_saved_model(saved, onnx_path, size)
    return str(tflite_path), onnx_path, control_flow


def _check_both_formats(model, images, tmp_path):
    expected = keras_logits(model, images)
    tflite_path, onnx_path, control_flow = _export_float(model, images.shape[1], tmp_path)
    tflite_runner, onnx_runner = TFLiteRunner(tflite_path), OnnxRunner(onnx_path)
    assert tflite_runner.input["dtype"] == np.uint8 and onnx_runner.input.type == "tensor(uint8)"
    assert onnx_runner.input.name == "image" and onnx_runner.output.name == "logits"
    assert_close(run_all(tflite_runner, images), expected)
    assert_close(run_all(onnx_runner, images), expected)
    return tflite_path, onnx_path, control_flow, expected


@pytest.mark.parametrize(
    "name, size",
    [("resnet20", 16), pytest.param("resnet26", 16, marks=pytest.mark.slow), pytest.param("squeezenet1_1", 32, marks=pytest.mark.slow)],
)
def test_plain_backbones_agree_with_keras(name, size, tmp_path):
    model, size = _plain(name, size)
    _, _, control_flow, _ = _check_both_formats(model, uint8_images(6, size), tmp_path)
    assert not control_flow


def test_normalization_as_one_convolution_matches_the_layer():
    from models.preprocessing import ChannelNormalization

    x = uint8_images(2, 5).astype(np.float32)
    for kwargs in (DATASET_STATS, {"mean": [103.9, 116.8, 123.7], "std": [1, 1, 1], "scale": 1.0, "channel_order": "bgr"}):
        layer = ChannelNormalization(**kwargs)
        np.testing.assert_allclose(graph.normalization_function(layer)(x).numpy(), layer(x).numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_global_k_like_routed_model_exports_as_a_compact_backbone_no_larger_than_the_plain_one(tmp_path):
    routed, compact, _ = global_k_models()
    images = uint8_images(6, 16)
    compact_tflite, _, _, _ = _check_both_formats(compact, images, tmp_path)
    # The compact file computes what the routed model computes at deterministic inference ...
    assert_close(keras_logits(compact, images), keras_logits(routed, images), 1e-5)
    # ... and is no larger than the plain backbone's file.
    plain = plain_resnet20()
    function, _ = graph.serving_function(plain)
    plain_tflite = tflite.convert(graph.write_saved_model(plain, function, str(tmp_path / "plain"), 16), "none")
    assert os.path.getsize(compact_tflite) <= len(plain_tflite) * 1.001


@pytest.mark.slow
def test_per_image_routed_model_runs_only_the_chosen_copies(tmp_path):
    model = routed_resnet20("per_image")
    images = varied_images(8, 16)
    decisions = mixed_policy(model, images)
    assert 0 < decisions.mean() < 1 and (decisions.min(0) != decisions.max(0)).any(), "images must take different paths"
    tflite_path, onnx_path, control_flow, expected = _check_both_formats(model, images, tmp_path)
    assert control_flow
    # Conditional execution survives conversion: IF ops in TFLite, If nodes in ONNX.
    ops = {op["op_name"] for op in TFLiteRunner(tflite_path).interpreter._get_ops_details()}
    assert "IF" in ops and not ops & {"ARG_MAX", "BITCAST", "BITWISE_XOR"}
    assert "If" in {node.op_type for node in onnx.load(onnx_path).graph.node}
    # A batch with mixed decisions computes both copies and mixes them, like RoutedBlock.
    runner = TFLiteRunner(tflite_path)
    runner.interpreter.resize_tensor_input(runner.input["index"], list(images.shape))
    runner.interpreter.allocate_tensors()
    assert_close(runner(images), expected)
    assert os.path.getsize(tflite_path) > 0
