"""End-to-end: python -m app.train and python -m app.evaluate as a user runs them."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.app.helpers import FAST_TRAIN, REPO, read_json, run_cli


def _history_epochs(run):
    path = run / "history.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_train_writes_a_complete_run_and_evaluate_reproduces_its_accuracy(tmp_path):
    run = tmp_path / "run"
    result = run_cli("app.train", "--epochs", "2", "--strategy", "last_k", "--k", "2", "--out", run, *FAST_TRAIN)
    assert "accuracy" in result.stdout and "run directory" in result.stdout
    for name in ("config.json", "model.keras", "metrics.json", "dataset.json", "history.csv"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert not (run / "backup").exists(), "the resume backup must be removed once the run has finished"

    metrics = read_json(run / "metrics.json")
    assert set(metrics["accuracy"]) >= {"train", "validation", "test"}
    for split, value in metrics["accuracy"].items():
        images = metrics["images"][split]
        assert images > 0
        assert abs(value * images - round(value * images)) < 1e-6 and 0 <= round(value * images) <= images  # correct / images
    assert metrics["train_images_per_second"] > 0
    assert metrics["trainable_parameters"] < metrics["total_parameters"]  # last_k froze the stem and early blocks

    evaluated = run_cli("app.evaluate", "--run", run, "--split", "test")
    expected = f"{metrics['accuracy']['test']:.4f}"
    assert expected in evaluated.stdout, evaluated.stdout


@pytest.mark.slow
# One case per training lifecycle with state of its own: the per-image policy network (spottune) and the
# global policy with its top-k finish (global_k, a SpotTuneGlobal). Plain Keras fit (finetune) is covered,
# weights and all, by tests/app/test_reliability.py::test_a_killed_and_resumed_run_ends_with_...
@pytest.mark.parametrize("strategy", ["spottune", "global_k"])
def test_killed_run_resumes_from_its_last_finished_epoch(tmp_path, strategy):
    run = tmp_path / "run"
    k = ["--k", "3"] if strategy == "global_k" else []
    command = [sys.executable, "-m", "app.train", "--epochs", "4", "--strategy", strategy, *k, "--out", str(run), *FAST_TRAIN]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 300
    while time.time() < deadline and len(_history_epochs(run)) < 1 and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _history_epochs(run)
    assert 1 <= len(finished) < 4, f"the kill came too late or too early: {finished}"
    assert not (run / "metrics.json").exists()

    result = run_cli("app.train", "--resume", run)
    epochs = _history_epochs(run)
    assert epochs == list(range(4)), f"epochs after resume: {epochs}"  # none repeated, none lost
    assert (run / "metrics.json").is_file()
    assert "run directory" in result.stdout


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    run = tmp_path / "run"
    run_cli("app.train", "--epochs", "1", "--distribute", "mirrored", "--virtual-cpus", "2", "--out", run, *FAST_TRAIN)
    metrics = read_json(run / "metrics.json")
    assert metrics["replicas"] == 2
    correct = metrics["accuracy"]["test"] * metrics["images"]["test"]
    assert abs(correct - round(correct)) < 1e-6 and metrics["images"]["test"] > 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["--dataset", "imagenet21k"], "unknown dataset"),
        (["--backbone", "resnet1000"], "unknown backbone"),
        (["--dataset", "folder"], "--data-dir"),
        (["--strategy", "last_k", "--k", "99"], "--k 99"),
        (["--strategy", "spotune"], "unknown strategy"),
        (["--weights", str(REPO.parent / "shared/weights/resnet-cifar10/resnet56.npz")], "resnet56"),
    ],
)
def test_bad_input_gives_one_line_error(args, words, tmp_path):
    result = run_cli("app.train", *FAST_TRAIN, *args, "--out", tmp_path / "run", check=False)  # the test's flags win
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("python -m app.train: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert words.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


def test_resume_of_a_missing_run_is_a_one_line_error(tmp_path):
    result = run_cli("app.train", "--resume", tmp_path / "nothing", check=False)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
