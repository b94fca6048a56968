"""python -m app.export: errors in one line, rejected files, routed runs, and the README path from app.train."""

import json
import os

import numpy as np
import pytest

from app.export import main
from export import verify
from export.exporter import ExportOptions, export_run
from tests.app.helpers import FAST_TRAIN, run_cli
from tests.export.helpers import mixed_policy, plain_resnet20, routed_resnet20, uint8_images, varied_images, write_run


def _error_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m app.export: error: "), err
    return err[0]


def test_errors_are_one_line(tmp_path, capsys):
    assert "does not exist" in _error_line(capsys, ["--run", str(tmp_path / "nowhere")])
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    assert "has no dataset.json" in _error_line(capsys, ["--run", str(incomplete)])
    assert "unknown format 'tflight'" in _error_line(capsys, ["--run", str(incomplete), "--format", "tflight"])
    assert "unknown quantization 'int4'" in _error_line(capsys, ["--run", str(incomplete), "--quantize", "none,int4"])

    # --delta on a run that is not global_k (checked before the model is even read).
    last_k = write_run(tmp_path / "last_k", None, "last_k", k=2)
    (tmp_path / "last_k" / "model.keras").write_bytes(b"")
    assert "--delta needs a run of global_k" in _error_line(capsys, ["--run", last_k, "--delta"])
    # A model file that is not one (empty: a copy or a write that stopped), named as such.
    assert "model.keras is truncated or corrupt" in _error_line(capsys, ["--run", last_k])


def test_a_file_below_the_agreement_threshold_is_rejected(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", plain_resnet20(), "finetune")
    original = verify.compare

    def poor_agreement(logits, reference, labels):
        return dict(original(logits, reference, labels), agreement=0.5)

    monkeypatch.setattr(verify, "compare", poor_agreement)
    report = export_run(run, ExportOptions(formats=("tflite",), out=str(tmp_path / "out"), max_images=16, latency_runs=2))
    [row] = report["files"]
    assert row["status"] == "rejected" and "0.5000 < 0.99" in row["note"]
    assert (tmp_path / "out" / "model_float32.tflite.rejected").is_file()
    assert not (tmp_path / "out" / "model_float32.tflite").exists()
    saved = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert saved["files"][0]["status"] == "rejected"


@pytest.mark.slow
def test_spottune_run_exports_conditional_routing_and_measures_it_against_the_plain_backbone(tmp_path):
    model = routed_resnet20("per_image")
    mixed_policy(model, varied_images(8, 16))
    run = write_run(tmp_path / "run", model, "spottune")
    report = export_run(run, ExportOptions(formats=("tflite",), out=str(tmp_path / "out"), max_images=48, latency_runs=10))
    assert report["exported"]["kind"] == "routed"
    for row in report["files"]:
        assert row["status"] == "ok" and row["agreement"] == 1.0, row
        assert row["routing"] == "conditional"
        assert row["plain_latency_ms"] > 0 and row["both_latency_ms"] > 0
        assert row["latency_ratio"] == pytest.approx(row["latency_ms"] / row["plain_latency_ms"])


@pytest.mark.slow
def test_readme_path_from_train_to_a_verified_tflite(tmp_path):
    run = tmp_path / "run"
    run_cli("app.train", "--epochs", "1", "--strategy", "last_k", "--k", "2", "--out", run, *FAST_TRAIN)
    result = run_cli("app.export", "--run", run, "--format", "tflite", "--quantize", "none,float16", "--max-images", "100", "--quiet")
    assert "model_float32.tflite" in result.stdout and "agree" in result.stdout
    report = json.loads((run / "export_report.json").read_text())
    assert [row["status"] for row in report["files"]] == ["ok", "ok"]
    assert report["verification"]["images"] == 100
    runner = verify.TFLiteRunner(str(run / "model_float32.tflite"))
    assert runner.input["dtype"] == np.uint8 and list(runner.input["shape"]) == [1, 16, 16, 3]
    assert runner(uint8_images(1, 16)).shape == (1, 10)
    assert os.path.getsize(run / "model_float16.tflite") < 0.6 * os.path.getsize(run / "model_float32.tflite")
