"""AdaFilter and TransTailor through the verbs: app.train writes their reports, app.export ships their networks.

Method pages: docs/methods/adafilter.md, docs/methods/transtailor.md.
"""

import os

import pytest

from tests.app.helpers import FAST_TRAIN, read_json, run_cli


@pytest.mark.slow
def test_adafilter_run_reports_filter_usage_and_exports_both_paths(tmp_path):
    run = tmp_path / "adafilter"
    run_cli("app.train", *FAST_TRAIN, "--strategy", "adafilter", "--epochs", "1", "--train-fraction", "0.2", "--out", run)
    metrics = read_json(run / "metrics.json")
    usage = metrics["adafilter"]
    assert usage["gated_layers"] == 18 and len(usage["per_layer"]) == 18  # resnet20: 9 blocks x 2 convolutions
    assert set(usage["per_class"]) <= set(read_json(run / "dataset.json")["class_names"])
    assert len(usage["per_filter"]["block_09_conv2_gated"]) == 64
    assert (run / "filter_usage.png").is_file() and os.listdir(run / "logs" / "adafilter")
    run_cli("app.export", "--run", run, "--format", "tflite", "--quantize", "none", "--latency-runs", "2", "--quiet")
    report = read_json(run / "export_report.json")
    assert report["files"][0]["status"] == "ok"
    assert "both paths" in report["exported"]["note"]


@pytest.mark.slow
def test_transtailor_run_prunes_to_its_target_saves_a_plain_network_and_exports_it(tmp_path):
    run = tmp_path / "transtailor"
    run_cli(
        "app.train", *FAST_TRAIN, "--strategy", "transtailor", "--target-ratio", "0.8", "--max-drop", "100",
        "--epochs", "1", "--train-fraction", "0.2", "--out", run,
    )
    metrics = read_json(run / "metrics.json")
    report = metrics["transtailor"]
    rounds = report["rounds"]
    assert len(rounds) >= 3 and rounds[-1]["flops_ratio"] <= 0.8 < rounds[-2]["flops_ratio"]
    assert report["final_parameters"] == metrics["total_parameters"] == rounds[-1]["parameters"] < rounds[0]["parameters"]
    assert (run / "finetuned.keras").is_file() and (run / "transtailor_rounds.png").is_file()
    run_cli("app.export", "--run", run, "--format", "tflite,onnx", "--quantize", "none", "--latency-runs", "2", "--quiet")
    files = read_json(run / "export_report.json")["files"]
    assert [f["status"] for f in files] == ["ok", "ok"]
    assert all(f["max_abs_diff"] < 1e-4 for f in files), files
