"""What happens when things go wrong (README): bad input is one line, a run directory has one writer,
its files are written whole, and the commands a run prints can be pasted as they are."""

import errno
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from tests.app.helpers import FAST_TRAIN, REPO, run_cli

VERBS = ("app.train", "app.evaluate", "app.export", "app.tune", "app.compare")

# Runs a verb's main with --help and prints which heavy packages were imported by then.
HELP_PROBE = (
    "import runpy, sys; sys.argv = [{verb!r}, '--help']\n"
    "try:\n    runpy.run_module({verb!r}, run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('IMPORTED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
)


def one_line_error(result, program="python -m app.train"):
    """The single `<program>: error: ...` line of a command that failed with status 2."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# --- item 8: --help without TensorFlow, pasteable commands -------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_help_imports_neither_tensorflow_nor_keras(verb):
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE.format(verb=verb)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "IMPORTED []", result.stdout[-500:]


def test_train_help_still_lists_every_method_flag():
    result = run_cli("app.train", "--help")
    for flag in ("--tau", "--count-weight", "--regularizer", "--delta-reduction", "--fisher-head", "--penalize", "--k"):
        assert flag in result.stdout, flag




@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished run (1 epoch, ResNet-20 at 16 px), in a folder whose path has spaces; and its stdout."""
    run = tmp_path_factory.mktemp("runs") / "my runs" / "it's one"
    run.mkdir(parents=True)
    for leftover in LEFTOVERS:  # of writes an earlier process did not finish
        (run / leftover).write_bytes(b"half a file")
    result = run_cli("app.train", "--epochs", "1", "--out", run, *FAST_TRAIN)
    return run, result.stdout


LEFTOVERS = ("w0.npz.tmp.npz", "metrics.json.tmp-4242.json", "model.keras.tmp-17.keras")


@pytest.mark.slow
def test_printed_tensorboard_command_works_for_a_path_with_spaces(finished_run):
    run, stdout = finished_run
    line = next(line for line in stdout.splitlines() if "TensorBoard:" in line)
    words = shlex.split(line.split("TensorBoard:", 1)[1])
    assert words[:2] == ["tensorboard", "--logdir"] and len(words) == 3, words
    assert os.path.samefile(os.path.join(REPO, words[2]), run / "logs")


# --- item 5: one line for every bad input, before any data is read ------------------------------------


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: /sys refuses it too)."""
    if os.geteuid() == 0:
        return "/sys"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


def test_unwritable_out_is_one_line_before_any_data_is_read(tmp_path):
    folder = unwritable_folder(tmp_path)
    # A --data-dir that does not exist: had the data been read first, the error would name it.
    result = run_cli("app.train", "--out", os.path.join(folder, "run"), "--dataset", "folder", "--data-dir", tmp_path / "no-such-data",
                     *FAST_TRAIN, check=False)
    line = one_line_error(result)
    assert "not writable" in line and folder in line and "choose another --out" in line, line


def test_out_whose_parent_is_missing_is_one_line_naming_the_fix(tmp_path):
    out = tmp_path / "missing" / "deeper" / "run"
    result = run_cli("app.train", "--out", out, "--dataset", "folder", "--data-dir", tmp_path / "no-such-data", *FAST_TRAIN, check=False)
    line = one_line_error(result)
    assert str(out.parent) in line and "mkdir -p" in line, line
    assert not out.parent.exists()


def test_out_that_is_a_file_is_one_line(tmp_path):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    line = one_line_error(run_cli("app.train", "--out", file, *FAST_TRAIN, check=False))
    assert "is a file" in line, line
    line = one_line_error(run_cli("app.train", "--out", file / "run", *FAST_TRAIN, check=False))
    assert "is missing" in line and "it is a file" in line, line


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"epochs": 3,', ["is not valid JSON", "line 1"]),
        ('[{"epochs": 3}]', ["holds a JSON list", "JSON object of settings"]),
        ('{"epochs": "ten"}', ["'epochs' must be an integer", '"ten"', '"epochs": 20']),
        ('{"lr": "fast"}', ["'lr' must be a number"]),
        ('{"extra": {"tau": "hot"}}', ["--tau must be a number"]),
        ('{"epochs": 3, "epoch": 4}', ["unknown configuration keys ['epoch']"]),
        ("\x89PNG\x00\x00", ["is not valid JSON"]),
    ],
)
def test_bad_config_file_is_one_line_naming_the_file(tmp_path, text, words):
    config = tmp_path / "settings.json"
    config.write_text(text)
    out = tmp_path / "run"
    line = one_line_error(run_cli("app.train", "--config", config, "--out", out, *FAST_TRAIN, check=False))
    for word in words:
        assert word in line, line
    assert str(config) in line or "--tau" in line, line
    assert not out.exists(), "nothing of a run is written for a bad config"


def test_corrupt_config_json_of_a_run_is_one_line_on_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"epochs": 2, "backbone": "resn')
    line = one_line_error(run_cli("app.train", "--resume", run, check=False))
    assert "config.json is not valid JSON" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["app.evaluate", "app.export"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_model_file_is_one_line_not_file_not_found(finished_run, tmp_path, verb, damage):
    import shutil

    source, _ = finished_run
    run = tmp_path / "copy"
    shutil.copytree(source, run)
    model = run / "model.keras"
    data = model.read_bytes()
    model.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(4096)}[damage])
    line = one_line_error(run_cli(verb, "--run", run, check=False), program=f"python -m {verb}")
    assert "model.keras is truncated or corrupt" in line and "File not found" not in line, line


# --- item 2: one process per run directory -------------------------------------------------------------

HOLD_LOCK = (
    "import sys, time; from rundir import layout as rd\n"
    "rd.lock_run(sys.argv[1]); print('locked', flush=True); time.sleep(600)"
)


def test_a_second_process_on_a_locked_run_directory_gets_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_line_error(run_cli("app.train", "--out", out, *FAST_TRAIN, check=False))
        assert f"pid {holder.pid}" in line and "in use by another adaptune process" in line, line
        assert os.listdir(out) == ["run.lock"], "the second process wrote nothing"
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the lock with the process
        holder.wait()
    # The lock went with the killed process: the next process takes it (it gets as far as the data).
    result = run_cli("app.train", "--out", out, "--dataset", "folder", "--data-dir", tmp_path / "no-such-data", *FAST_TRAIN, check=False)
    line = one_line_error(result)
    assert "in use" not in line and "no-such-data" in line, line


@pytest.mark.slow
def test_two_trainings_on_the_same_out_one_runs_the_other_stops_at_once(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "app.train", "--epochs", "1", "--out", str(out), *FAST_TRAIN],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    lock = out / "run.lock"
    while first.poll() is None and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.02)
    second = run_cli("app.train", "--epochs", "2", "--out", out, *FAST_TRAIN, check=False)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    line = one_line_error(second)
    assert f"pid {first.pid}" in line, line
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["epochs"] == 1 and metrics["epochs"] == 1  # the first run's, whole
    with open(out / "history.csv") as f:
        assert sum(line.startswith("epoch") for line in f) == 1  # one header: one run wrote it


# --- item 1: every file of the run directory written whole ------------------------------------------


def disk_full():
    return OSError(errno.ENOSPC, "No space left on device")


def test_finished_run_has_no_temporary_files_left(finished_run):
    run, _ = finished_run
    names = {p.name for p in run.iterdir()}
    assert not names & set(LEFTOVERS), names
    assert not [name for name in names if ".tmp" in name], names
    assert {"config.json", "model.keras", "metrics.json", "w0.npz"} <= names


@pytest.mark.parametrize("writer", ["write_json", "TrainConfig.save"])
def test_a_json_write_that_fails_half_way_leaves_the_previous_file_intact(tmp_path, monkeypatch, writer):
    from rundir import layout as rd
    from rundir.config import TrainConfig

    def write(epochs):
        if writer == "write_json":
            rd.write_json(tmp_path, "config.json", TrainConfig(epochs=epochs).to_dict())
        else:
            TrainConfig(epochs=epochs).save(str(tmp_path / "config.json"))

    write(3)
    before = (tmp_path / "config.json").read_bytes()

    def half_then_full(values, f, **kwargs):
        f.write(json.dumps(values)[:20])
        raise disk_full()

    monkeypatch.setattr(json, "dump", half_then_full)
    with pytest.raises(OSError):
        write(7)
    monkeypatch.undo()
    assert (tmp_path / "config.json").read_bytes() == before
    assert TrainConfig.load(str(tmp_path / "config.json")).epochs == 3
    assert os.listdir(tmp_path) == ["config.json"], "the temporary file is removed"


def test_a_w0_write_that_fails_half_way_leaves_the_previous_w0_intact(tmp_path, monkeypatch):
    import numpy as np

    from app import regularization

    file = str(tmp_path / "w0.npz")
    regularization._save_npz(file, {"block_01/kernel": np.arange(6.0)})

    def half_then_full(target, **arrays):
        with open(target, "wb") as f:
            f.write(b"PK\x03\x04 half an archive")
        raise disk_full()

    monkeypatch.setattr(np, "savez", half_then_full)
    with pytest.raises(OSError):
        regularization._save_npz(file, {"block_01/kernel": np.zeros(6)})
    monkeypatch.undo()
    np.testing.assert_array_equal(regularization._load_npz(file)["block_01/kernel"], np.arange(6.0))
    assert os.listdir(tmp_path) == ["w0.npz"]


def test_a_resume_checkpoint_write_that_fails_leaves_the_last_epoch_resumable(tmp_path, monkeypatch):
    import keras
    import numpy as np

    from app.callbacks import WholeBackupAndRestore

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)

    def network():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    backup = tmp_path / "backup"
    model = network()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[WholeBackupAndRestore(str(backup), delete_checkpoint=False)])
    after_epoch_1 = [w.copy() for w in model.get_weights()]
    before = (backup / "latest.weights.h5").read_bytes()

    def half_then_full(self, filepath, overwrite=True, **kwargs):
        with open(filepath, "wb") as f:
            f.write(before[: len(before) // 3])
        raise disk_full()

    monkeypatch.setattr(keras.Model, "save_weights", half_then_full)
    with pytest.raises(OSError):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[WholeBackupAndRestore(str(backup), delete_checkpoint=False)])
    monkeypatch.undo()
    assert (backup / "latest.weights.h5").read_bytes() == before
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "training_metadata.json"], "no temporary file is left"

    resumed = network()
    history = resumed.fit(x, y, epochs=2, verbose=0, callbacks=[WholeBackupAndRestore(str(backup), delete_checkpoint=False)])
    assert history.epoch == [1], "the resumed fit starts after the last complete epoch"
    restored = network()
    restored.load_weights(str(backup / "latest.weights.h5"))  # the checkpoint reads back (now epoch 2's)
    assert not all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), after_epoch_1))


def test_remove_leftovers_takes_only_temporary_files(tmp_path):
    from rundir import layout as rd

    keep = ["config.json", "model.keras", "w0.npz", "history.csv", "run.lock", "backup/latest.weights.h5", "backup/latest.weights.h5.bkp"]
    drop = ["w0.npz.tmp.npz", "config.json.tmp", "metrics.json.tmp-12.json", "backup/latest.weights.h5.tmp-9.weights.h5"]
    (tmp_path / "backup").mkdir()
    for name in keep + drop:
        (tmp_path / name).write_text("x")
    removed = rd.remove_leftovers(str(tmp_path))
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == sorted(drop)
    assert all((tmp_path / name).exists() for name in keep)


# --- item 3: a resumed run is the uninterrupted run ---------------------------------------------------


def _epochs_of(dataset, count, steps):
    """The batches of `count` epochs of a multi-epoch pipeline, as lists of (images, labels) arrays."""
    iterator = iter(dataset)
    return [[(x.numpy(), y.numpy()) for _, (x, y) in zip(range(steps), iterator)] for _ in range(count)]


@pytest.mark.parametrize("cache", [True, False])
def test_the_batches_of_an_epoch_are_the_same_whether_or_not_the_run_was_interrupted_before_it(cache):
    import numpy as np

    from pipelines import load_dataset

    bundle = load_dataset(None, seed=0)
    steps = bundle.num_batches("train", 128)

    def epochs(first, stop, seed=5):
        return bundle.batches("train", 128, training=True, image_size=16, seed=seed, epochs=(first, stop), cache=cache)

    uninterrupted = _epochs_of(epochs(0, 3), 3, steps)
    resumed = _epochs_of(epochs(2, 3), 1, steps)[0]  # a run that restarts at epoch 2
    assert len(resumed) == steps == len(uninterrupted[2])
    for (x, y), (x2, y2) in zip(uninterrupted[2], resumed):
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(x, x2)  # same images, same crops, scales and flips
    # ... and the epochs differ from one another (order and augmentation), and with the seed.
    assert not np.array_equal(uninterrupted[0][0][1], uninterrupted[1][0][1])
    assert not np.array_equal(uninterrupted[2][0][0], _epochs_of(epochs(2, 3, seed=6), 1, steps)[0][0][0])
    labels = np.sort(np.concatenate([y for _, y in uninterrupted[1]]))
    np.testing.assert_array_equal(labels, np.sort(np.asarray([label for _, label in bundle.files("train")])))  # one pass each


def test_history_file_keeps_the_earlier_sessions_epochs_and_drops_the_ones_run_again(tmp_path):
    from app.callbacks import HistoryFile
    from rundir import layout as rd

    file = str(tmp_path / "history.csv")
    first = HistoryFile(file)
    for epoch in range(3):  # the first session ran epochs 0, 1, 2; the checkpoint of epoch 2 never got written
        first.on_epoch_end(epoch, {"loss": 3.0 - epoch, "accuracy": 0.1 * epoch})
    resumed = HistoryFile(file, first_epoch=2)
    resumed.on_epoch_end(2, {"loss": 0.75, "accuracy": 0.3})
    resumed.on_epoch_end(3, {"loss": 0.5, "accuracy": 0.4})
    assert resumed.epochs == [0, 1, 2, 3]
    assert resumed.history == {"accuracy": [0.0, 0.1, 0.3, 0.4], "loss": [3.0, 2.0, 0.75, 0.5]}
    assert [row["epoch"] for row in rd.read_history(file)] == [0, 1, 2, 3]
    with open(file) as f:
        assert sum(line.startswith("epoch") for line in f) == 1


def _kill_after_epochs(command, run, epochs):
    """Start `command`, SIGKILL it once history.csv holds `epochs` rows; the rows it left."""
    import signal

    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    from rundir import layout as rd

    deadline = time.time() + 300
    while time.time() < deadline and len(rd.read_history(str(run / "history.csv"))) < epochs and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return len(rd.read_history(str(run / "history.csv")))


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_with_the_uninterrupted_runs_weights_and_accuracy(tmp_path):
    import numpy as np

    from rundir.run import load_keras_model

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train = ["--epochs", "3", *FAST_TRAIN]
    run_cli("app.train", "--out", whole, *train)
    left = _kill_after_epochs([sys.executable, "-m", "app.train", "--out", str(broken), *train], broken, 2)
    assert 2 <= left < 3, f"the kill came too late: {left} epochs"
    assert not (broken / "metrics.json").exists()
    run_cli("app.train", "--resume", broken)

    a, b = (json.loads((run / "metrics.json").read_text()) for run in (whole, broken))
    assert len(b["history"]["loss"]) == 3, "metrics.json holds every epoch of the resumed run"
    assert b["epochs_run_in_this_session"] < 3
    np.testing.assert_allclose(b["history"]["loss"], a["history"]["loss"], rtol=1e-5)
    assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1e-9)  # the same images right
    # Measured on the 2-core Xeon: bit-identical weights; allowed: 1e-5 of the largest weight.
    wa = load_keras_model(str(whole / "model.keras")).get_weights()
    wb = load_keras_model(str(broken / "model.keras")).get_weights()
    scale = max(float(np.max(np.abs(w))) for w in wa)
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb)) <= 1e-5 * scale


# --- items 4 and 7: a run directory is self-sufficient; export verifies on enough images -----------------

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def tiny_folder(root, per_split=(("train", 12), ("validation", 5), ("test", 5)), colours=COLOURS):
    """A tiny folder dataset: train/validation/test class folders of 24 px PNGs, one colour per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_split:
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


TINY_TRAIN = ["--dataset", "folder", "--backbone", "resnet20", "--image-size", "16", "--batch-size", "8", "--epochs", "3", "--quiet"]


@pytest.fixture(scope="module")
def moved_data_run(tmp_path_factory):
    """A finished run on a tiny folder dataset whose folder was then moved: (run, new place of the data)."""
    root = tmp_path_factory.mktemp("moved")
    data, run = tiny_folder(root / "photos"), root / "run"
    run_cli("app.train", "--data-dir", data, "--out", run, *TINY_TRAIN)
    moved = root / "photos moved"
    data.rename(moved)
    return run, moved


def printed_accuracy(stdout):
    """{split: (images, accuracy)} from a printed summary table."""
    rows = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] in ("train", "validation", "test"):
            rows[words[0]] = (int(words[1]), float(words[2]))
    return rows


@pytest.mark.slow
def test_evaluate_of_a_run_whose_data_is_gone_uses_its_sample_and_data_dir_the_moved_data(moved_data_run):
    run, moved = moved_data_run
    metrics = json.loads((run / "metrics.json").read_text())

    from_sample = run_cli("app.evaluate", "--run", run)
    assert "sample.npz" in from_sample.stderr and "--data-dir" in from_sample.stderr, from_sample.stderr[-2000:]
    rows = printed_accuracy(from_sample.stdout)
    assert set(rows) == {"validation", "test"}, from_sample.stdout  # the sample holds the whole (small) splits
    for split, (images, accuracy) in rows.items():
        assert images == metrics["images"][split] and accuracy == pytest.approx(metrics["accuracy"][split], abs=6e-5)

    from_moved = run_cli("app.evaluate", "--run", run, "--data-dir", moved)
    assert "sample.npz" not in from_moved.stderr
    rows = printed_accuracy(from_moved.stdout)
    assert set(rows) == {"train", "validation", "test"}, from_moved.stdout
    for split, (images, accuracy) in rows.items():
        assert images == metrics["images"][split] and accuracy == pytest.approx(metrics["accuracy"][split], abs=6e-5)


@pytest.mark.slow
def test_export_of_a_run_whose_data_is_gone_verifies_and_calibrates_on_its_sample(moved_data_run, tmp_path):
    run, moved = moved_data_run
    out = tmp_path / "from sample"
    result = run_cli("app.export", "--run", run, "--quantize", "none,int8", "--out", out, "--latency-runs", "2", "--quiet")
    assert "sample.npz" in result.stderr, result.stderr[-2000:]
    report = json.loads((out / "export_report.json").read_text())
    assert report["verification"]["data"] == str(run / "sample.npz")
    assert report["verification"]["images"] == 30 and report["verification"]["split"] == "validation+test"
    assert report["calibration_images"] == 36  # the training images the sample keeps
    assert [row["status"] for row in report["files"]] == ["ok", "ok"]
    assert (out / "model_int8.tflite").is_file() and not [p for p in out.iterdir() if ".tmp" in p.name]

    out = tmp_path / "from moved data"
    run_cli("app.export", "--run", run, "--out", out, "--latency-runs", "2", "--data-dir", moved, "--quiet")
    report = json.loads((out / "export_report.json").read_text())
    assert report["verification"]["data"] == f"folder:{moved}", report["verification"]


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["app.evaluate", "app.export"])
def test_a_run_without_its_data_or_a_sample_is_one_line_naming_data_dir(moved_data_run, tmp_path, verb):
    import shutil

    run, _ = moved_data_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "sample.npz").unlink()  # a run written before runs kept a sample
    line = one_line_error(run_cli(verb, "--run", copy, check=False), program=f"python -m {verb}")
    assert "does not exist" in line and "sample.npz" in line and "--data-dir" in line, line


def test_verification_takes_the_whole_validation_split_topped_up_from_test_to_500():
    import numpy as np

    from export.verify import verification_images
    from pipelines import load_dataset

    bundle = load_dataset(None, seed=0)  # 282 validation and 293 test images
    images, labels, split = verification_images(bundle, 16)
    assert split == "validation+test" and len(images) == len(labels) == 500
    validation = np.concatenate([y for _, y in bundle.batches("validation", 64, training=False, image_size=16)])
    np.testing.assert_array_equal(labels[:282], validation)  # every validation image, in order
    images, labels, split = verification_images(bundle, 16, max_images=100)
    assert split == "validation" and len(images) == 100


def test_agreement_interval_is_the_wilson_score_interval():
    from export.verify import compare, wilson_interval
    import numpy as np

    assert wilson_interval(95, 100) == pytest.approx((0.8882, 0.9785), abs=2e-4)
    assert wilson_interval(100, 100)[1] == 1.0 and wilson_interval(100, 100)[0] == pytest.approx(0.9630, abs=2e-4)
    reference = np.eye(4)[np.arange(200) % 4]
    exported = reference.copy()
    exported[:10] = np.roll(exported[:10], 1, axis=1)  # 10 of 200 disagree
    result = compare(exported, reference, np.arange(200) % 4)
    assert result["agreement"] == 0.95 and result["agreement_interval"] == pytest.approx(list(wilson_interval(190, 200)))


# --- item 6: data that cannot train a classifier, a cluster that is not there ---------------------------


def test_a_dataset_with_one_class_is_one_line_naming_the_fix(tmp_path):
    data = tiny_folder(tmp_path / "photos", colours={"red": COLOURS["red"]})
    out = tmp_path / "run"
    line = one_line_error(run_cli("app.train", "--data-dir", data, "--out", out, *TINY_TRAIN, check=False))
    assert "has one class, 'red'" in line and "at least two" in line and "<data-dir>/<class>/" in line, line
    assert not out.exists()


def test_an_empty_class_folder_that_leaves_one_class_is_one_line_naming_it(tmp_path):
    data = tiny_folder(tmp_path / "photos", colours={"red": COLOURS["red"]})
    for split in ("train", "validation", "test"):
        (data / split / "green").mkdir()
    line = one_line_error(run_cli("app.train", "--data-dir", data, "--out", tmp_path / "run", *TINY_TRAIN, check=False))
    assert "has one class, 'red'" in line and "'green' holds no images" in line, line


def test_an_empty_class_folder_is_one_warning_naming_it(tmp_path):
    from pipelines import DataWarning, load_dataset

    data = tiny_folder(tmp_path / "photos")
    (data / "train" / "purple").mkdir()
    with pytest.warns(DataWarning) as caught:
        bundle = load_dataset("folder", data_dir=str(data))
    assert bundle.class_names == ["blue", "green", "red"]
    messages = [str(w.message) for w in caught if "purple" in str(w.message)]
    assert len(messages) == 1 and "holds no images" in messages[0] and "3 classes remain" in messages[0], messages


@pytest.mark.slow
def test_the_empty_class_warning_is_one_line_on_the_command_line(tmp_path):
    data = tiny_folder(tmp_path / "photos")
    (data / "train" / "purple").mkdir()
    result = run_cli("app.evaluate", "--backbone", "resnet20", "--dataset", "folder", "--data-dir", data, check=False)
    lines = [line for line in result.stderr.splitlines() if "purple" in line]
    assert lines and lines[0].startswith("python -m app.evaluate: warning: class folder 'purple'"), result.stderr[-2000:]
    assert len(lines) == 1 and "warnings.warn" not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("tf_config, words", [(None, "TF_CONFIG environment variable, which is not set"), ('{"cluster": ', "TF_CONFIG is not valid JSON")])
def test_multiworker_without_tf_config_is_one_line_saying_to_set_it(tmp_path, tf_config, words):
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    command = [sys.executable, "-m", "app.train", "--distribute", "multiworker", "--out", str(tmp_path / "run"), *FAST_TRAIN]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    line = one_line_error(result)
    assert words in line and "set it" in line and "TF_CONFIG='{" in line, line
    assert not (tmp_path / "run").exists()


# --- items 1 and 5: a full disk is one line, and the run goes on once there is space ---------------------

# Runs a verb with the file system full for the `nth` file opened for writing whose name holds `pattern`:
# open() fails there with ENOSPC, as it does on a full disk.
FULL_DISK = (
    "import builtins, errno, runpy, sys\n"
    "pattern, nth, verb = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
    "real_open, seen = builtins.open, [0]\n"
    "def full_disk_open(file, mode='r', *args, **kwargs):\n"
    "    if pattern in str(file) and any(m in mode for m in 'wax'):\n"
    "        seen[0] += 1\n"
    "        if seen[0] >= nth:\n"
    "            raise OSError(errno.ENOSPC, 'No space left on device', str(file))\n"
    "    return real_open(file, mode, *args, **kwargs)\n"
    "builtins.open = full_disk_open\n"
    "sys.argv = [verb, *sys.argv[4:]]\n"
    "runpy.run_module(verb, run_name='__main__')\n"
)


def run_on_a_full_disk(pattern, nth, verb, *args):
    command = [sys.executable, "-c", FULL_DISK, pattern, str(nth), verb, *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


@pytest.mark.slow
def test_a_disk_that_fills_during_training_is_one_line_and_the_run_resumes_once_there_is_space(tmp_path):
    from rundir import layout as rd

    run = tmp_path / "run"
    # The disk fills when the second epoch's history.csv is written (before that epoch's checkpoint).
    result = run_on_a_full_disk("history.csv", 2, "app.train", "--epochs", "3", "--out", run, *FAST_TRAIN)
    line = one_line_error(result)
    assert "no space left on the device" in line and "--resume" in line and str(run) in line, line
    assert [row["epoch"] for row in rd.read_history(str(run / "history.csv"))] == [0], "the last whole history.csv"
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert not [p.name for p in run.rglob("*") if ".tmp" in p.name], "no half-written file is left"
    assert not (run / "metrics.json").exists()

    run_cli("app.train", "--resume", run)  # space is free again
    assert [row["epoch"] for row in rd.read_history(str(run / "history.csv"))] == [0, 1, 2]
    assert len(json.loads((run / "metrics.json").read_text())["history"]["loss"]) == 3


@pytest.mark.slow
def test_an_export_on_a_full_disk_leaves_no_half_file_and_says_so_in_one_line(moved_data_run, tmp_path):
    run, _ = moved_data_run
    out = tmp_path / "out"
    result = run_on_a_full_disk(".tflite", 1, "app.export", "--run", run, "--out", out, "--latency-runs", "2", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("python -m app.export: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["export_report.json"], "no model file, whole or half"


def test_a_strategy_file_whose_write_fails_leaves_the_previous_one_and_no_staging_folder(tmp_path):
    from rundir import layout as rd

    (tmp_path / "compact.keras").write_bytes(b"the last complete model")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events").write_text("kept")
    with pytest.raises(OSError):
        with rd.staging(str(tmp_path)) as staged:
            with open(os.path.join(staged, "compact.keras"), "wb") as f:
                f.write(b"half a mo")
            raise disk_full()
    assert (tmp_path / "compact.keras").read_bytes() == b"the last complete model"
    assert sorted(os.listdir(tmp_path)) == ["compact.keras", "logs"]

    with rd.staging(str(tmp_path)) as staged:  # a finish that completes: its files replace the old ones
        with open(os.path.join(staged, "compact.keras"), "wb") as f:
            f.write(b"the new model")
        os.makedirs(os.path.join(staged, "logs", "routing"))
        with open(os.path.join(staged, "logs", "routing", "heatmap"), "w") as f:
            f.write("new")
    assert (tmp_path / "compact.keras").read_bytes() == b"the new model"
    assert (tmp_path / "logs" / "events").read_text() == "kept" and (tmp_path / "logs" / "routing" / "heatmap").exists()
    assert sorted(os.listdir(tmp_path)) == ["compact.keras", "logs"]

    (tmp_path / f".staging.tmp-{os.getpid() + 1}").mkdir()  # a killed process's
    assert [os.path.basename(p) for p in rd.remove_leftovers(str(tmp_path))] == [f".staging.tmp-{os.getpid() + 1}"]


def test_history_csv_write_that_fails_leaves_the_previous_file(tmp_path, monkeypatch):
    from app.callbacks import HistoryFile

    file = tmp_path / "history.csv"
    history = HistoryFile(str(file))
    history.on_epoch_end(0, {"loss": 2.0})
    before = file.read_bytes()

    import csv

    class FullDiskWriter:
        def __init__(self, f):
            self.f = f

        def writerow(self, row):
            self.f.write("epoch,lo")
            raise disk_full()

    monkeypatch.setattr(csv, "writer", FullDiskWriter)
    with pytest.raises(OSError):
        history.on_epoch_end(1, {"loss": 1.0})
    monkeypatch.undo()
    assert file.read_bytes() == before and os.listdir(tmp_path) == ["history.csv"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 12 MB tmpfs (needs root and a kernel that lets this process mount; skipped elsewhere)."""
    folder = tmp_path / "small disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_the_run_resumes_once_space_is_freed(small_tmpfs):
    from rundir import layout as rd

    run, filler = small_tmpfs / "run", small_tmpfs / "filler"
    command = [sys.executable, "-m", "app.train", "--epochs", "4", "--out", str(run), *FAST_TRAIN]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    while not (run / "backup" / "training_metadata.json").exists() and process.poll() is None:
        time.sleep(0.02)
    with open(filler, "wb") as f:  # fill the disk while epoch 1 trains
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("python -m app.train: error:")]
    assert len(lines) == 1 and "no space left on the device" in lines[0] and "--resume" in lines[0], stderr[-3000:]
    finished = [row["epoch"] for row in rd.read_history(str(run / "history.csv"))]
    assert 1 <= len(finished) < 4 and finished == list(range(len(finished)))

    filler.unlink()  # space is free again
    run_cli("app.train", "--resume", run)
    assert [row["epoch"] for row in rd.read_history(str(run / "history.csv"))] == [0, 1, 2, 3]
    assert (run / "metrics.json").is_file() and not [p.name for p in run.rglob("*") if ".tmp" in p.name]
