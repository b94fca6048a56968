import pytest

from app.train import build_parser, config_from_args
from models.errors import ModelConfigError
from rundir.config import TrainConfig


def test_flags_override_config_file_and_defaults(tmp_path):
    config_file = tmp_path / "best.json"
    config_file.write_text('{"config": {"lr": 0.003, "epochs": 7, "strategy": "last_k", "k": 2}}')
    args = build_parser().parse_args(["--config", str(config_file), "--epochs", "3", "--normalize", "dataset"])
    config = config_from_args(args)
    assert config.lr == 0.003  # from the file
    assert config.epochs == 3  # the flag wins
    assert config.strategy == "last_k" and config.k == 2
    assert config.extra["normalize"] == "dataset"
    assert config.batch_size == TrainConfig().batch_size  # default kept


def test_config_round_trips_through_json(tmp_path):
    config = TrainConfig(dataset="folder", data_dir="/data", k=3, extra={"normalize": "source"})
    config.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    "field, value, words",
    [("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"), ("lr", -1.0, "--lr"), ("optimizer", "rmsprop", "--optimizer")],
)
def test_invalid_values_give_one_line_errors(field, value, words):
    config = TrainConfig(**{field: value})
    with pytest.raises(ModelConfigError) as error:
        config.validate()
    assert words in str(error.value) and "\n" not in str(error.value)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ModelConfigError, match="unknown configuration keys"):
        TrainConfig.from_dict({"learning_rate": 0.1})
