"""python -m app.tune: the search space (defaults, hp.Fixed), results files, and a two-trial search end to end."""

import csv
import glob
import os

import keras_tuner
import pytest

from app import tune
from models.errors import ModelConfigError
from rundir.config import TrainConfig
from tests.app.helpers import FAST_TRAIN, read_json, run_cli

RANGES = {"alpha": (1e-3, 10.0), "beta": (1e-4, 1.0), "lr": (1e-3, 0.5)}


def hypermodel(base, searched=("alpha", "beta", "lr")):
    return tune._hypermodel_class()(base, None, searched, RANGES, 9, "unused")


def test_every_hyperparameter_has_a_default():
    model = hypermodel(TrainConfig(regularizer="l2sp", lr=0.02, strategy="last_k", k=4), ("alpha", "beta", "lr", "k"))
    config = model.config_for(keras_tuner.HyperParameters())
    assert (config.alpha, config.beta, config.lr, config.k) == (0.1, 0.01, 0.02, 4)


def test_fixed_values_pin_the_trial_configuration():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("alpha", 0.5)
    hp.Fixed("beta", 0.002)
    hp.Fixed("lr", 0.003)
    config = hypermodel(TrainConfig(regularizer="l1sp")).config_for(hp)
    assert (config.alpha, config.beta, config.lr, config.regularizer, config.penalize) == (0.5, 0.002, 0.003, "l1sp", "kernels")


def test_searched_hyperparameters_follow_the_regularizer_and_strategy():
    parser = tune.build_parser()
    args = parser.parse_args([])
    assert tune.searched_names(args, TrainConfig(regularizer="none"), uses_k=False) == ["lr"]
    assert tune.searched_names(args, TrainConfig(regularizer="delta"), uses_k=True) == ["alpha", "beta", "lr", "k"]
    with pytest.raises(ModelConfigError, match="--search alpha does not apply"):
        tune.searched_names(parser.parse_args(["--search", "alpha"]), TrainConfig(regularizer="none"), uses_k=False)
    with pytest.raises(ModelConfigError, match="not searchable"):
        tune.searched_names(parser.parse_args(["--search", "gamma"]), TrainConfig(regularizer="l2sp"), uses_k=False)


def test_log_ranges_contain_the_default():
    assert tune.log_range(0.1) == pytest.approx((1e-3, 10.0))
    assert tune.log_range(0.05, spread=30.0, ceiling=1.0) == pytest.approx((0.05 / 30, 1.0))
    assert tune.log_range(0.5, 0.01, 0.1) == (0.01, 0.5)
    with pytest.raises(ModelConfigError):
        tune.log_range(0.1, 1.0, 0.5)


def test_results_table_is_written_as_csv_and_markdown(tmp_path):
    rows = [{"trial": "1", "status": "COMPLETED", "val_accuracy": 0.5, "alpha": 0.1}, {"trial": "0", "status": "FAILED", "val_accuracy": None, "alpha": 1.0}]
    csv_path, md_path = tune.write_results(str(tmp_path), rows)
    assert list(csv.DictReader(open(csv_path)))[0]["alpha"] == "0.1"
    assert open(md_path).read().splitlines()[2] == "| 1 | COMPLETED | 0.5 | 0.1 |"


@pytest.mark.slow
def test_two_trial_search_runs_end_to_end_and_its_best_config_feeds_app_train(tmp_path):
    out = tmp_path / "search"
    result = run_cli("app.tune", "--regularizer", "l2sp", "--trials", "2", "--epochs", "1", "--out", out, *FAST_TRAIN)
    assert "best configuration" in result.stdout

    rows = list(csv.DictReader(open(out / tune.RESULTS_CSV)))
    assert len(rows) == 2 and {"alpha", "beta", "lr", "val_accuracy"} <= set(rows[0])
    assert float(rows[0]["val_accuracy"]) >= float(rows[1]["val_accuracy"])
    assert (out / tune.RESULTS_MD).read_text().count("\n") == 4

    best = read_json(out / tune.BEST_FILE)
    assert best["config"]["regularizer"] == "l2sp" and best["config"]["out"] is None
    assert best["config"]["alpha"] == pytest.approx(float(rows[0]["alpha"]))
    from app.train import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--config", str(out / tune.BEST_FILE)]))
    assert (config.alpha, config.beta, config.lr) == pytest.approx((best["config"]["alpha"], best["config"]["beta"], best["config"]["lr"]))

    # TensorBoard: one HParams session per trial, and the experiment summary at the root
    sessions = glob.glob(str(out / "logs" / "*" / "execution0" / "events.out.tfevents.*"))
    assert len(sessions) == 2
    assert glob.glob(str(out / "logs" / "events.out.tfevents.*"))
    assert not os.path.exists(out / "test")


@pytest.mark.parametrize("strategy, k", [("global_k", 2), ("spottune", None)])
def test_a_trial_trains_the_policy_with_its_own_optimizer(tmp_path, strategy, k):
    # app.tune builds its trials with app.trainer.build_trainer, as app.train does: the policy
    # network gets its own SGD (lr 0.01, momentum 0.9, weight decay 1e-3; SpotTune authors' code).
    from app.training import load_data
    from models.split_optimizer import SplitOptimizer

    base = TrainConfig(strategy=strategy, k=k, image_size=16, batch_size=64, lr=0.05, epochs=1, extra={"policy_image_size": 8})
    bundle = load_data(base)
    model = tune._hypermodel_class()(base, bundle, ("lr",), RANGES, 9, str(tmp_path))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("lr", 0.2)
    trainer = model.build(hp)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, SplitOptimizer)
    assert float(optimizer.secondary.learning_rate) == pytest.approx(0.01)
    assert optimizer.secondary.weight_decay == pytest.approx(1e-3)
    assert optimizer.secondary.momentum == pytest.approx(0.9)
    assert float(optimizer.main.learning_rate) != pytest.approx(0.01)  # the network's schedule, not the policy's
    policy_variables = [v for v in trainer.network.get_layer("policy").trainable_variables]
    assert policy_variables and all(optimizer.is_secondary(v) for v in policy_variables)
    assert not any(optimizer.is_secondary(v) for v in trainer.network.get_layer("classifier").trainable_variables)
