"""The regularisation glue: flags, w0 / Fisher / attention files in the run directory, distance report, subsets."""

import argparse
import dataclasses
import io
import json
import os

import keras
import numpy as np
import pytest

from app import regularization as reg
from app.subsets import apply_train_fraction, carve_validation
from models.errors import ModelConfigError
from models.regularizers import get_regularizer
from rundir.config import TrainConfig


@pytest.fixture(scope="module")
def bundle():
    from pipelines import load_dataset

    return load_dataset(None)


def config_for(regularizer, **values):
    extra = values.pop("extra", {})
    values = {"image_size": 16, "batch_size": 16, "fisher_batches": 2, **values}
    return TrainConfig(regularizer=regularizer, extra={"delta_head_epochs": 1, "delta_attention_batches": 1, **extra}, **values)


def build(config, bundle):
    from app.training import build_model

    keras.utils.set_random_seed(0)
    network, backbone, image_size, _ = build_model(config, bundle)
    return network, backbone, image_size


def test_flags_parse_into_config_fields_and_extras():
    parser = reg.add_regularization_flags(argparse.ArgumentParser())
    assert reg.add_regularization_flags(parser) is parser  # a second call adds nothing
    args = parser.parse_args(["--regularizer", "l2sp", "--alpha", "0.2", "--penalize", "all", "--fisher-head", "target", "--train-fraction", "0.1"])
    assert (args.regularizer, args.alpha, args.penalize, args.fisher_head, args.train_fraction) == ("l2sp", 0.2, "all", "target", 0.1)
    assert set(reg.EXTRA_FLAGS) >= {"fisher_head", "fisher_scale", "delta_head_epochs", "delta_attention_batches", "train_fraction"}


@pytest.mark.parametrize(
    "config, words",
    [
        (TrainConfig(regularizer="l2sp", alpha=-1.0), "--alpha must be a number >= 0"),
        (TrainConfig(regularizer="l2_sp"), "unknown regularizer 'l2_sp'"),
        (TrainConfig(regularizer="l2sp_fisher", fisher_batches=0), "--fisher-batches must be at least 1"),
        (TrainConfig(regularizer="l2sp", extra={"train_fraction": 1.5}), "--train-fraction must be in (0, 1]"),
    ],
)
def test_bad_settings_are_one_line_errors(config, words):
    with pytest.raises(ModelConfigError) as error:
        reg.check_regularization(config)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_settings_apply_the_authors_defaults():
    settings = reg.settings_of(TrainConfig(regularizer="l2sp"))
    assert (settings["alpha"], settings["beta"], settings["penalize"]) == (0.1, 0.01, "kernels")
    settings = reg.settings_of(TrainConfig(regularizer="l2"))
    assert (settings["alpha"], settings["beta"]) == (1e-4, 1e-3)


def test_delta_on_a_backbone_without_stages_is_a_one_line_error(bundle, tmp_path):
    config = config_for("delta")
    network, backbone, image_size = build(config, bundle)
    with pytest.raises(ModelConfigError) as error:
        reg.regularization_terms(config, network, dataclasses.replace(backbone, stages=[]), bundle, str(tmp_path), image_size)
    assert "declares no stages" in str(error.value) and "\n" not in str(error.value)


def test_fisher_is_estimated_once_and_reused_on_resume(bundle, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    config = config_for("l2sp_fisher")
    network, backbone, image_size = build(config, bundle)
    terms = reg.regularization_terms(config, network, backbone, bundle, run, image_size, verbose=False)
    assert [t.name for t in terms] == ["l2sp_fisher", "l2_new"]
    assert (config.alpha, config.beta, config.penalize) == (0.1, 0.01, "kernels")  # recorded for config.json
    for name in (reg.W0_FILE, reg.FISHER_FILE, reg.REGULARIZATION_FILE):
        assert os.path.isfile(os.path.join(run, name)), name
    report = json.load(open(os.path.join(run, reg.REGULARIZATION_FILE)))
    assert report["fisher"]["head"] == "source"  # the CIFAR ResNet carries its CIFAR-10 classifier
    assert report["fisher"]["examples"] == 2 * 16 and report["fisher"]["from_cache"] is False
    first = [keras.ops.convert_to_numpy(c) for c in terms[0].coefficients]
    assert np.mean(np.concatenate([f.ravel() for f in first])) == pytest.approx(1.0, rel=1e-4)

    import models.regularizers.fisher as fisher_module

    monkeypatch.setattr(fisher_module, "estimate_fisher", lambda *a, **k: pytest.fail("the Fisher was estimated again"))
    network, backbone, image_size = build(config_for("l2sp_fisher"), bundle)
    again = reg.regularization_terms(config_for("l2sp_fisher"), network, backbone, bundle, run, image_size, verbose=False)
    for a, b in zip(first, again[0].coefficients):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    assert json.load(open(os.path.join(run, reg.REGULARIZATION_FILE)))["fisher"]["from_cache"] is True


def test_w0_file_is_the_starting_point_and_wins_on_resume(bundle, tmp_path):
    run = str(tmp_path / "run")
    config = config_for("l2sp")
    network, backbone, image_size = build(config, bundle)
    reg.regularization_terms(config, network, backbone, bundle, run, image_size, verbose=False)
    saved = dict(np.load(os.path.join(run, reg.W0_FILE)))
    assert any(key.startswith("block_01|") for key in saved) and any("gamma" in key for key in saved)  # all shared weights

    # a resumed process whose fresh network differs (e.g. another random init) still starts from the saved w0
    network, backbone, image_size = build(config_for("l2sp", weights="none", seed=3), bundle)
    terms = reg.regularization_terms(config_for("l2sp", weights="none"), network, backbone, bundle, run, image_size, verbose=False)
    keys = [k for k in saved if k.endswith("kernel")]
    for start, key in zip(terms[0].starts, keys):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(start), saved[key])


def test_delta_attention_is_cached_and_the_terms_train(bundle, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    config = config_for("delta")
    network, backbone, image_size = build(config, bundle)
    terms = reg.regularization_terms(config, network, backbone, bundle, run, image_size, verbose=False)
    assert [t.name for t in terms] == ["delta", "l2_new"]
    cached = dict(np.load(os.path.join(run, get_regularizer("delta").attention_file)))
    assert {f"attention|{h}" for h in ("block_03", "block_06", "block_09")} <= set(cached)

    import models.regularizers.channel_attention as attention_module

    monkeypatch.setattr(attention_module, "estimate_channel_attention", lambda *a, **k: pytest.fail("estimated again"))
    network, backbone, image_size = build(config_for("delta"), bundle)
    terms = reg.regularization_terms(config_for("delta"), network, backbone, bundle, run, image_size, verbose=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(terms[0].attention[0]), cached["attention|block_03"])


def test_distance_report_prints_a_table_and_writes_a_plot(bundle, tmp_path):
    run = str(tmp_path / "run")
    config = config_for("none")
    network, backbone, image_size = build(config, bundle)
    assert reg.regularization_terms(config, network, backbone, bundle, run, image_size, verbose=False) == []
    block = network.get_layer("block_02")
    block.weights[0].assign(keras.ops.convert_to_numpy(block.weights[0]) + 0.01)
    stream = io.StringIO()
    table = reg.report_distances(network, run, stream=stream)
    assert table["block_01"]["distance"] == 0.0
    assert table["block_02"]["distance"] == pytest.approx(0.01 * np.sqrt(np.prod(block.weights[0].shape)), rel=1e-3)
    assert table["total"]["distance"] == pytest.approx(table["block_02"]["distance"], rel=1e-6)
    assert "block_02" in stream.getvalue() and "||w-w0||" in stream.getvalue()
    assert os.path.getsize(os.path.join(run, reg.DISTANCE_PLOT)) > 1000
    json.dumps(table)  # goes into metrics.json
    assert reg.report_distances(network, str(tmp_path / "elsewhere"), stream=stream) == {}


def test_train_fraction_and_validation_carving_are_stratified_and_disjoint(bundle):
    small = apply_train_fraction(TrainConfig(extra={"train_fraction": 0.1}), bundle)
    train = bundle.splits["train"]
    assert small.split_sizes["train"] == pytest.approx(0.1 * len(train), abs=bundle.num_classes)
    assert set(small.splits["train"].labels) == set(train.labels)
    assert small.split_sizes["test"] == bundle.split_sizes["test"]
    assert apply_train_fraction(TrainConfig(), bundle) is bundle

    carved = carve_validation(bundle, 0.2, seed=0)
    assert set(carved.splits) == {"train", "validation"} and carved.labelled_splits == ("train", "validation")
    kept, held = set(carved.splits["train"].sources), set(carved.splits["validation"].sources)
    assert not kept & held and kept | held == set(train.sources)
    assert not held & set(bundle.splits["test"].sources)
    assert len(held) == pytest.approx(0.2 * len(train), abs=bundle.num_classes)
    assert carve_validation(bundle, 0.2, seed=0).splits["validation"].sources == carved.splits["validation"].sources
