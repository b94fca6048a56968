"""Multi-worker training on loopback: two local workers (MultiWorkerMirroredStrategy) against one process.

Every process a test starts goes through `app.local_cluster.LocalProcesses`, which ends them all
when the test leaves, whatever happened; every wait is bounded.
"""

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from app.local_cluster import LOOPBACK, LocalProcesses, free_ports, python_module
from tests.app.helpers import REPO, run_cli

TINY = ["--dataset", "folder", "--backbone", "resnet20", "--weights", "none", "--image-size", "16", "--batch-size", "8", "--quiet"]
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def tiny_folder(root, train=8, validation=2):
    """Two classes of 16 x 16 noise images (dark and bright), `train` and `validation` per class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("validation", validation)):
        for name, level in (("dark", 60), ("bright", 190)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def start_workers(group, ports, out, data, worker_dirs, *extra, resume=False):
    workers = ",".join(f"{LOOPBACK}:{port}" for port in ports)
    for index in range(len(ports)):
        run = ["--resume", out] if resume else ["--out", out, "--data-dir", data, "--distribute", "multiworker", *TINY, *extra]
        argv = python_module("app.train", *run, "--workers", workers, "--worker-index", index, "--worker-dir", worker_dirs[index])
        group.start(f"worker{index}", argv, env=ENV, cwd=REPO)


def weights_of(model_file):
    from rundir.run import load_keras_model

    return [np.asarray(w) for w in load_keras_model(model_file).weights]


def assert_same_weights(a, b, **tolerance):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **tolerance)


def check_all_ended(group, timeout):
    codes = group.wait(timeout=timeout)
    for name, code in codes.items():
        assert code == 0, f"{name} exited {code}:\n{group.log(name)[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [["--strategy", "finetune"], ["--strategy", "linear"], ["--regularizer", "l2sp"]], ids=["finetune", "linear", "l2sp"])
def test_two_workers_end_with_the_weights_of_one_process(tmp_path, strategy):
    data = tiny_folder(tmp_path / "data")
    chief, single = str(tmp_path / "chief"), str(tmp_path / "single")
    worker_dirs = [str(tmp_path / "unused"), str(tmp_path / "worker1")]
    with LocalProcesses(tmp_path / "logs") as group:
        start_workers(group, free_ports(2), chief, data, worker_dirs, "--epochs", "1", *strategy)
        check_all_ended(group, timeout=300)
    run_cli("app.train", "--out", single, "--data-dir", data, "--epochs", "1", *TINY, *strategy, env=ENV, timeout=300)

    # Only the chief wrote the run directory; worker 1 wrote its own copy (kept: --worker-dir).
    assert not os.path.exists(worker_dirs[0])
    for name in ("config.json", "model.keras", "metrics.json", "history.csv"):
        assert os.path.isfile(os.path.join(chief, name))
    metrics = json.load(open(os.path.join(chief, "metrics.json")))
    assert metrics["replicas"] == 2 and metrics["distribute"] == "multiworker"

    on_chief, on_worker, alone = (weights_of(os.path.join(d, "model.keras")) for d in (chief, worker_dirs[1], single))
    assert_same_weights(on_chief, on_worker, rtol=0, atol=0)  # one all-reduced update: the same bits
    # the same global batch of 8 in one process: equal within float32 reduction order (sums of 2 x 4 vs 8)
    assert_same_weights(on_chief, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_spottune_trains_on_two_workers(tmp_path):
    data = tiny_folder(tmp_path / "data")
    chief, worker_dirs = str(tmp_path / "chief"), [str(tmp_path / "unused"), str(tmp_path / "worker1")]
    with LocalProcesses(tmp_path / "logs") as group:
        start_workers(group, free_ports(2), chief, data, worker_dirs, "--epochs", "1", "--strategy", "spottune")
        check_all_ended(group, timeout=300)
    assert_same_weights(weights_of(os.path.join(chief, "model.keras")), weights_of(os.path.join(worker_dirs[1], "model.keras")), rtol=0, atol=0)
    assert "routing" in json.load(open(os.path.join(chief, "metrics.json")))


def _checkpoint_epoch(run):
    try:
        with open(os.path.join(run, "backup", "training_metadata.json")) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_a_killed_worker_restarts_and_the_run_completes(tmp_path):
    data = tiny_folder(tmp_path / "data", train=24)
    chief, worker_dirs = str(tmp_path / "chief"), [str(tmp_path / "unused"), str(tmp_path / "worker1")]
    epochs = 3
    with LocalProcesses(tmp_path / "logs") as group:
        ports = free_ports(2)
        start_workers(group, ports, chief, data, worker_dirs, "--epochs", str(epochs))
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(chief) < 1:  # the first epoch is done: kill worker 1 in the second
            assert time.monotonic() < deadline, "no epoch finished in 300 s:\n" + group.log("worker0")[-3000:]
            assert group.processes["worker0"].poll() is None, group.log("worker0")[-3000:]
            time.sleep(0.2)
        group.kill("worker1")
        # The chief's collectives fail once its peer is gone (or it is ended, as a cluster manager would).
        try:
            group.wait(["worker0"], timeout=120)
        except TimeoutError:
            group.kill("worker0")
        finished = _checkpoint_epoch(chief)
        assert 1 <= finished < epochs
        start_workers(group, ports, chief, data, worker_dirs, resume=True)
        check_all_ended(group, timeout=300)
        log = group.log("worker0")

    metrics = json.load(open(os.path.join(chief, "metrics.json")))
    assert metrics["epochs"] == epochs
    assert metrics["epochs_run_in_this_session"] == epochs - finished, log[-2000:]
    assert not os.path.isdir(os.path.join(chief, "backup"))
    assert_same_weights(weights_of(os.path.join(chief, "model.keras")), weights_of(os.path.join(worker_dirs[1], "model.keras")), rtol=0, atol=0)


def test_multiworker_without_a_cluster_is_one_line(tmp_path):
    env = dict(ENV, TF_CONFIG="")
    result = run_cli("app.train", "--distribute", "multiworker", "--out", str(tmp_path / "run"), check=False, env=env, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("python -m app.train: error:")]
    assert len(errors) == 1 and "--workers host:port,host:port --worker-index I" in errors[0] and "TF_CONFIG" in errors[0]


def test_workers_flag_writes_tf_config():
    from app.cluster import distribute_with_workers, is_chief, tf_config_for, worker_directory
    from models.errors import ModelConfigError

    assert distribute_with_workers(None, "a:1,b:2") == "multiworker"
    with pytest.raises(ModelConfigError, match="not --distribute mirrored"):
        distribute_with_workers("mirrored", "a:1,b:2")
    with pytest.raises(ModelConfigError, match="--worker-index"):
        tf_config_for("a:1,b:2", None)

    text = tf_config_for("10.0.0.1:2222,10.0.0.2:2222", 1)
    assert json.loads(text) == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}
    assert not is_chief({"TF_CONFIG": text})
    assert is_chief({"TF_CONFIG": tf_config_for("10.0.0.1:2222,10.0.0.2:2222", 0)})
    assert worker_directory({"TF_CONFIG": text}) == worker_directory({"TF_CONFIG": text})  # a restart finds it
    assert worker_directory({"TF_CONFIG": text}) != worker_directory({"TF_CONFIG": tf_config_for("10.0.0.1:2222,10.0.0.3:2222", 1)})


GUMBEL_PER_REPLICA = """
import json, sys
from app.devices import split_cpu
split_cpu(2)
import keras, numpy as np, tensorflow as tf
from models.spottune.gumbel_softmax import GumbelSoftmax

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def draws(seed):
    with strategy.scope():
        gate = GumbelSoftmax(temperature=5.0, hard=False, seed=seed)
    step = tf.function(lambda: gate(tf.zeros((6, 9, 2)), training=True))
    return [np.asarray(v).tolist() for v in strategy.experimental_local_results(strategy.run(step))]
print(json.dumps({"a": draws(3), "b": draws(3), "c": draws(4)}))
"""


@pytest.mark.slow
def test_gumbel_noise_differs_per_replica_and_follows_the_seed():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", GUMBEL_PER_REPLICA], cwd=REPO, capture_output=True, text=True, timeout=180,
                            env=dict(os.environ, **ENV))
    assert result.returncode == 0, result.stderr[-3000:]
    draws = json.loads(result.stdout.strip().splitlines()[-1])
    first, second = (np.asarray(r) for r in draws["a"])
    assert not np.allclose(first, second)  # the two replicas draw different noise for the same images
    np.testing.assert_array_equal(np.asarray(draws["a"]), np.asarray(draws["b"]))  # the same seed, the same draws
    assert not np.allclose(np.asarray(draws["a"]), np.asarray(draws["c"]))
