"""Full-integer int8 files keep the top-1 decisions of the float model on real images.

The model is the pretrained CIFAR-10 ResNet-20 with its own classifier, run on the CIFAR-10 sample
in ../shared/data: its logits are far from tied, unlike those of a randomly initialised head, so
top-1 agreement measures quantisation error rather than coin flips between near-equal logits.
"""

import json

import numpy as np
import pytest

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


# What holds on any CPU (x86-64 with or without AVX-512 / VNNI, ARM): a correctly quantised int8
# ResNet-20 keeps most top-1 decisions of the float model; a broken quantisation (wrong scales,
# saturated sums, no calibration) lands near chance, 0.1 here. Measured on an AVX-512 VNNI Xeon:
# see the README's export table. Whether one CPU's figure clears the export threshold
# (--min-agreement-quantized, 0.95) depends on its kernels, so the test checks what the verb does
# with the figure (accept, or rename to .rejected and exit 1), not the figure against 0.95.
INT8_FLOOR = 0.85


@pytest.mark.slow
def test_int8_tflite_and_onnx_keep_the_float_decisions_and_the_verb_applies_its_threshold(cifar_run, tmp_path, capsys):
    from app import export as export_cli

    run, parameters = cifar_run
    out = tmp_path / "out"
    status = export_cli.main([
        "--run", run, "--format", "tflite,onnx", "--quantize", "int8", "--out", str(out), "--max-images", "200",
        "--calibration-batches", "4", "--int8-io", "--latency-runs", "5", "--quiet",
    ])
    printed = capsys.readouterr()
    report = json.loads((out / "export_report.json").read_text())
    assert report["verification"]["keras_accuracy"] > 0.7  # the pretrained network on its own classes
    assert report["host"]["machine"] and report["host"]["model"]  # the CPU these figures belong to
    assert "verified on:" in printed.out
    threshold = report["thresholds"]["quantized"]
    files = {p.name for p in out.iterdir()}
    for row in report["files"]:
        assert row["agreement"] >= INT8_FLOOR, row
        assert row["accuracy"] >= report["verification"]["keras_accuracy"] - 0.1, row
        name = row["file"].removesuffix(".rejected")
        if row["agreement"] >= threshold:
            assert row["status"] == "ok" and name in files and name + ".rejected" not in files, row
        else:
            assert row["status"] == "rejected" and name + ".rejected" in files and name not in files, row
            assert f"{name}: top-1 agreement with Keras {row['agreement']:.4f} < {threshold}" in printed.err
    assert status == (1 if any(row["status"] == "rejected" for row in report["files"]) else 0)
    tflite_row = report["files"][0]
    assert tflite_row["file"].startswith("model_int8_io.tflite") and tflite_row["int8_io"]
    runner = TFLiteRunner(tflite_row["path"])
    assert runner.input["dtype"] == np.uint8 and runner.output["dtype"] == np.int8 and runner.output_quantization
    ops = {op["op_name"] for op in runner.interpreter._get_ops_details()}
    assert "CONV_2D" in ops and "DEQUANTIZE" not in ops  # full-integer: no float weights
    # An int8 file is about a quarter of the float32 weights.
    assert tflite_row["size_bytes"] < 0.35 * 4 * parameters
