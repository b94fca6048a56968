"""A distributed search (KerasTuner chief + workers on loopback) against a serial one over the same trials."""

import csv
import os

import pytest

from app.tune_cluster import role, without_local_workers
from models.errors import ModelConfigError
from tests.app.helpers import read_json, run_cli
from tests.app.test_multiworker import ENV, tiny_folder

SEARCH = ["--dataset", "folder", "--backbone", "resnet20", "--weights", "none", "--image-size", "16", "--batch-size", "8",
          "--regularizer", "l2sp", "--search", "alpha,lr", "--trials", "3", "--epochs", "1", "--val-fraction", "0.25", "--quiet"]


def scores(out):
    with open(os.path.join(out, "results.csv")) as f:
        return sorted((round(float(r["alpha"]), 12), round(float(r["lr"]), 12), float(r["val_accuracy"])) for r in csv.DictReader(f))


@pytest.mark.slow
def test_a_chief_and_two_workers_complete_the_trials_of_a_serial_search(tmp_path):
    data = str(tiny_folder(tmp_path / "data", train=12))
    distributed, serial = str(tmp_path / "distributed"), str(tmp_path / "serial")
    run_cli("app.tune", "--distributed", "--local-workers", "2", "--data-dir", data, "--out", distributed, *SEARCH, env=ENV, timeout=600)
    run_cli("app.tune", "--data-dir", data, "--out", serial, *SEARCH, env=ENV, timeout=600)

    best = read_json(os.path.join(distributed, "best_config.json"))
    assert best["search"]["trials"] == 3
    logs = os.listdir(os.path.join(distributed, "cluster-logs"))
    assert sorted(logs) == ["chief.log", "tuner0.log", "tuner1.log"]
    assert sorted(os.listdir(os.path.join(distributed, "work"))) == ["chief", "tuner0", "tuner1"] or "tuner0" in os.listdir(os.path.join(distributed, "work"))
    # the same trials (values drawn by the seeded oracle), each scored the same
    assert scores(distributed) == scores(serial)
    assert best["config"] == read_json(os.path.join(serial, "best_config.json"))["config"]


def test_distributed_needs_kerastuners_variables():
    with pytest.raises(ModelConfigError, match="--local-workers N"):
        role(True, environ={})
    with pytest.raises(ModelConfigError, match="add --distributed"):
        role(False, environ={"KERASTUNER_TUNER_ID": "tuner0"})
    full = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert role(True, environ=dict(full, KERASTUNER_TUNER_ID="chief")) == "chief"
    assert role(True, environ=dict(full, KERASTUNER_TUNER_ID="tuner1")) == "worker"
    assert role(False, environ={}) == "serial"


def test_local_workers_flag_is_not_passed_on():
    assert without_local_workers(["--trials", "3", "--local-workers", "2", "--out", "x"]) == ["--trials", "3", "--out", "x", "--distributed"]
    assert without_local_workers(["--local-workers=2", "--distributed"]) == ["--distributed"]
