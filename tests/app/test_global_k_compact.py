"""global_k end to end with its compact phase: the run ships the compact network trained on its k chosen blocks."""

import keras
import numpy as np
import pytest

from tests.app.helpers import FAST_TRAIN, read_json, run_cli


def test_the_global_k_flags_are_offered_by_train():
    result = run_cli("app.train", "--help")
    assert "--compact-epochs" in result.stdout and "--block-choice {penalty,top_k}" in result.stdout


@pytest.mark.slow
def test_global_k_with_compact_epochs_ships_the_trained_compact_network(tmp_path):
    run = tmp_path / "run"
    run_cli("app.train", "--strategy", "global_k", "--k", "3", "--epochs", "2", "--block-choice", "top_k",
            "--compact-epochs", "1", "--out", run, *FAST_TRAIN)
    metrics = read_json(run / "metrics.json")
    routing = metrics["routing"]
    chosen = routing["finetuned_blocks"]
    assert len(chosen) == 3 and sum(routing["decisions"]) == 3 and not routing["forced_top_k"]
    assert routing["compact_epochs"] == 1 and len(routing["compact_history"]["loss"]) == 1
    # The run's result is the compact network: metrics.json's accuracy is its accuracy, the routed one beside it.
    assert metrics["accuracy"] == routing["compact_accuracy"]
    assert set(routing["routed_accuracy"]) == set(metrics["accuracy"]) == set(routing["compact_cut_accuracy"])
    evaluated = run_cli("app.evaluate", "--run", run, "--split", "test")
    assert f"{metrics['accuracy']['test']:.4f}" in evaluated.stdout, evaluated.stdout

    from models import registry
    from models.backbones import build_backbone
    from models.backbones.base import block_name
    from models.spottune.classifier import routed_blocks

    registry.import_all_layers()
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    compact = keras.saving.load_model(run / "compact.keras", safe_mode=True)
    routed = keras.saving.load_model(run / "routed.keras", safe_mode=True)
    trained = {block_name(i) for i in chosen} | {"head", "classifier"}
    assert routing["compact_trainable_layers"] == [layer.name for layer in model.layers if layer.name in trained]
    assert {layer.name for layer in model.layers if layer.trainable_weights} <= trained
    # (A reloaded Keras model lists the variables of its frozen layers as trainable again, last_k's too: count by layer.)
    in_trained = sum(int(np.prod(v.shape)) for layer in model.layers if layer.name in trained for v in layer.trainable_weights)
    assert model.get_layer("classifier").count_params() < metrics["trainable_parameters"] <= in_trained
    backbone = build_backbone("resnet20")  # the pretrained backbone the run started from
    copies = routed_blocks(routed)
    for index, block in enumerate(backbone.blocks):
        kept = model.get_layer(block_name(index)).get_weights()
        for a, b in zip(kept, compact.get_layer(block_name(index)).get_weights()):
            np.testing.assert_array_equal(a, b)  # compact.keras is the shipped network
        if index in chosen:  # trained on after the routed phase
            assert any(not np.allclose(a, b) for a, b in zip(kept, copies[index].finetuned.get_weights()))
        else:  # exactly the pretrained weights, BatchNorm statistics included
            for a, b in zip(kept, block.get_weights()):
                np.testing.assert_array_equal(a, b)
    for a, b in zip(model.get_layer("stem").get_weights(), routed.get_layer("stem").get_weights()):
        np.testing.assert_array_equal(a, b)  # frozen in the compact phase

    # The task delta: the k blocks and the classifier (the stem as the routed training left it), rebuilt exactly.
    run_cli("app.export", "--run", run, "--delta", "--out", tmp_path / "export", "--quiet")
    delta = read_json(tmp_path / "export" / "export_report.json")["delta"]
    assert delta["finetuned_blocks"] == chosen and delta["rebuilt_max_abs_diff"] < 1e-5
    assert set(delta["parts"]) <= {"stem", "head", "classifier", *(block_name(i) for i in chosen)}
    from export.delta import DELTA_FILE, rebuild

    rebuilt = rebuild(str(tmp_path / "export" / DELTA_FILE))
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_killed_global_k_run_with_a_compact_phase_resumes_and_ships_the_compact_network(tmp_path):
    import sys

    from tests.app.test_reliability import _kill_after_epochs
    from tests.app.test_train_cli import _history_epochs

    run = tmp_path / "run"
    command = [sys.executable, "-m", "app.train", "--epochs", "3", "--strategy", "global_k", "--k", "2",
               "--compact-epochs", "1", "--out", str(run), *FAST_TRAIN]
    _kill_after_epochs(command, run, 1)  # SIGKILL once the first epoch's row is in history.csv
    assert 1 <= len(_history_epochs(run)) < 3 and not (run / "metrics.json").exists()
    run_cli("app.train", "--resume", run)
    assert _history_epochs(run) == [0, 1, 2]
    metrics = read_json(run / "metrics.json")
    assert metrics["accuracy"] == metrics["routing"]["compact_accuracy"]
    assert len(metrics["routing"]["finetuned_blocks"]) == 2 and (run / "routed.keras").is_file()
