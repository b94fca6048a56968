"""Full-integer int8 files keep the top-1 decisions of the float model on real images.

The model is the pretrained CIFAR-10 ResNet-20 with its own classifier, run on the CIFAR-10 sample
in ../shared/data: its logits are far from tied, unlike those of a randomly initialised head, so
top-1 agreement measures quantisation error rather than coin flips between near-equal logits.
"""

import numpy as np
import pytest

from export.exporter import ExportOptions, export_run
from export.verify import TFLiteRunner
from models.backbones import build_backbone
from models.classifier import assemble_classifier
from tests.export.helpers import write_run

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, shared_dir):
    model = assemble_classifier(build_backbone("resnet20"), use_source_classifier=True)
    directory = tmp_path_factory.mktemp("int8") / "run"
    data_dir = str(shared_dir / "data" / "cifar10-sample" / "test")
    write_run(directory, model, "linear", image_size=32, dataset="folder", data_dir=data_dir, class_names=CIFAR10)
    return str(directory), model.count_params()


@pytest.mark.slow
def test_int8_tflite_and_onnx_agree_with_keras_on_real_images(cifar_run, tmp_path):
    run, parameters = cifar_run
    out = tmp_path / "out"
    options = ExportOptions(
        formats=("tflite", "onnx"), quantize=("int8",), out=str(out), max_images=200, calibration_batches=4,
        int8_io=True, latency_runs=5,
    )
    report = export_run(run, options)
    assert report["verification"]["keras_accuracy"] > 0.7  # the pretrained network on its own classes
    for row in report["files"]:
        assert row["status"] == "ok", row
        assert row["agreement"] >= 0.95, row
        assert row["accuracy"] >= report["verification"]["keras_accuracy"] - 0.05
    tflite_row = report["files"][0]
    assert tflite_row["file"] == "model_int8_io.tflite" and tflite_row["int8_io"]
    runner = TFLiteRunner(str(out / "model_int8_io.tflite"))
    assert runner.input["dtype"] == np.uint8 and runner.output["dtype"] == np.int8 and runner.output_quantization
    ops = {op["op_name"] for op in runner.interpreter._get_ops_details()}
    assert "CONV_2D" in ops and "DEQUANTIZE" not in ops  # full-integer: no float weights
    # An int8 file is about a quarter of the float32 weights.
    assert tflite_row["size_bytes"] < 0.35 * 4 * parameters
