"""SpotTune strategies end to end: what the run directory records about routing."""

import keras
import numpy as np
import pytest

from tests.app.helpers import FAST_TRAIN, read_json, run_cli


@pytest.mark.slow
def test_global_k_run_ends_with_exactly_k_fine_tuned_blocks_and_a_compact_model(tmp_path):
    run = tmp_path / "run"
    run_cli("app.train", "--strategy", "global_k", "--k", "3", "--epochs", "2", "--out", run, *FAST_TRAIN)
    metrics = read_json(run / "metrics.json")
    routing = metrics["routing"]
    assert sum(routing["decisions"]) == 3
    assert len(routing["finetuned_blocks"]) == 3 and routing["finetuned_block_names"][0].startswith("block_")
    assert len(routing["fraction_finetuned"]) == 9  # ResNet-20 has 9 blocks
    assert set(routing["per_class"]) == set(read_json(run / "dataset.json")["class_names"])
    assert (run / "routing_heatmap.png").stat().st_size > 1000
    from models.regularizers import get_regularizer
    from models.strategies import get_strategy
    from rundir.layout import run_files

    assert {p.name for p in run.iterdir()} <= set(run_files(get_strategy("global_k"), get_regularizer("none")))
    images_on_split = metrics["images"][routing["split"]]
    sampled = routing["accuracy_sampled"][routing["split"]] * images_on_split
    assert abs(sampled - round(sampled)) < 1e-6  # correct / images, with sampled routing
    for fraction in routing["fraction_finetuned"]:  # images routed to the fine-tuned copy / images
        assert abs(fraction * images_on_split - round(fraction * images_on_split)) < 1e-3

    from models import registry

    registry.import_all_layers()  # registers every adaptune layer

    compact = keras.saving.load_model(run / "compact.keras", safe_mode=True)
    routed = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert routed.count_params() > 1.9 * compact.count_params()
    assert routing["compact_parameters"] == compact.count_params()
    # One plain backbone: the same parameter count as a plain ResNet-20 classifier for these classes.
    from models.backbones import build_backbone
    from models.classifier import assemble_classifier

    plain = assemble_classifier(build_backbone("resnet20", weights="none"), len(routing["per_class"]))
    assert compact.count_params() == plain.count_params()

    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    if not routing["forced_top_k"]:
        np.testing.assert_allclose(compact.predict(images, verbose=0), routed.predict(images, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_spottune_run_logs_routing_to_tensorboard_and_metrics(tmp_path):
    run = tmp_path / "run"
    run_cli("app.train", "--strategy", "spottune", "--epochs", "1", "--out", run, *FAST_TRAIN)
    metrics = read_json(run / "metrics.json")
    routing = metrics["routing"]
    assert routing["inference"] == "deterministic"
    images_on_split = metrics["images"][routing["split"]]
    for fraction in routing["fraction_finetuned"]:  # images routed to the fine-tuned copy / images
        assert 0 <= round(fraction * images_on_split) <= images_on_split
        assert abs(fraction * images_on_split - round(fraction * images_on_split)) < 1e-3
    for per_class in routing["per_class"].values():
        assert len(per_class) == len(routing["fraction_finetuned"])
    assert not (run / "compact.keras").exists()  # per-image decisions have no compact form
    events = list((run / "logs" / "routing").glob("events.out.tfevents.*"))
    assert events, "no routing TensorBoard events"
    import tensorflow as tf

    tags = set()
    for record in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in record.summary.value:
            tags.add(value.tag)
    assert "routing/block_01" in tags and "routing/heatmap" in tags


@pytest.mark.parametrize("args, words", [(["--strategy", "global_k"], "needs --k"),
                                         (["--strategy", "global_k", "--k", "0"], "--k 0"),
                                         (["--strategy", "global_k", "--k", "10"], "--k 10"),
                                         (["--strategy", "spottune", "--tau", "0"], "--tau")])
def test_bad_spottune_settings_are_one_line_errors(args, words, tmp_path):
    result = run_cli("app.train", *FAST_TRAIN, *args, "--out", tmp_path / "run", check=False)  # the test's flags win
    assert result.returncode == 2, result.stderr[-1500:]
    assert words in result.stderr and "Traceback" not in result.stderr
