"""One validated training configuration: built from flags, saved as the run's config.json."""

import dataclasses
import json
import math
import types

from models.errors import ModelConfigError

OPTIMIZERS = ("sgd", "adam")
DISTRIBUTE = ("none", "mirrored", "multiworker")
SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass
class TrainConfig:
    """Everything needed to rebuild and retrain a run. Field names match the command-line flags."""

    dataset: str | None = None
    data_dir: str | None = None
    tfds_data_dir: str | None = None
    backbone: str = "resnet20"
    weights: str = "default"
    strategy: str = "finetune"
    k: int | None = None
    bn: str = "train"
    dropout: float = 0.0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    head_lr_ratio: float = 1.0
    head_epochs: int = 0
    momentum: float = 0.9
    optimizer: str = "sgd"
    schedule: str = "cosine"
    warmup_epochs: int = 1
    image_size: int | None = None
    seed: int = 0
    out: str | None = None
    regularizer: str = "none"
    alpha: float | None = None
    beta: float | None = None
    penalize: str | None = None
    fisher_batches: int = 20
    distribute: str = "none"
    virtual_cpus: int = 0
    extra: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        """Raise ModelConfigError (one line) on values no run can use."""
        if self.epochs < 1:
            raise ModelConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ModelConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ModelConfigError(f"--lr must be a positive number, got {self.lr}")
        if not (self.head_lr_ratio > 0 and math.isfinite(self.head_lr_ratio)):
            raise ModelConfigError(f"--head-lr-ratio must be a positive number (the new layers' rate / --lr), got {self.head_lr_ratio}")
        if not 0 <= self.head_epochs < self.epochs:
            raise ModelConfigError(
                f"--head-epochs {self.head_epochs} must be in 0..{self.epochs - 1}: at least one of the {self.epochs} epochs trains every layer; "
                f"raise --epochs or lower --head-epochs"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ModelConfigError(f"unknown --optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ModelConfigError(f"unknown --schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.distribute not in DISTRIBUTE:
            raise ModelConfigError(f"unknown --distribute {self.distribute!r}; use one of {', '.join(DISTRIBUTE)}")
        if self.image_size is not None and self.image_size < 8:
            raise ModelConfigError(f"--image-size must be at least 8 pixels, got {self.image_size}")
        if self.warmup_epochs < 0:
            raise ModelConfigError(f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        if self.virtual_cpus < 0:
            raise ModelConfigError(f"--virtual-cpus must be 0 or more, got {self.virtual_cpus}")
        from models.strategies import check_strategy_flags

        check_strategy_flags(self.extra)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A TrainConfig from {field: value} (a JSON object); ModelConfigError (one line) on an unknown key or a value of the wrong type."""
        if not isinstance(values, dict):
            raise ModelConfigError(f"a configuration is a JSON object of settings such as {{\"epochs\": 20}}, got a {json_type_name(values)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ModelConfigError(f"unknown configuration keys {unknown}; valid keys: {sorted(fields)}")
        for name, value in values.items():
            allowed = _allowed_types(fields[name].type)
            if not _has_type(value, allowed):
                words = " or ".join(_TYPE_WORDS[t] for t in allowed)
                example = json.dumps(getattr(cls(), name)) if name != "extra" else "{}"
                raise ModelConfigError(f"configuration key {name!r} must be {words}, got {json.dumps(value)}; e.g. \"{name}\": {example}")
        return cls(**values)

    def save(self, path):
        """Write config.json whole or not at all (`rundir.layout.replacing`)."""
        from rundir.layout import replacing

        with replacing(path) as tmp, open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path):
        """The TrainConfig saved at `path`; ModelConfigError (one line) when it is not valid JSON or not a configuration."""
        return cls.from_dict(read_settings(path))


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", dict: "a JSON object", type(None): "null"}


def _allowed_types(annotation):
    return tuple(annotation.__args__) if isinstance(annotation, types.UnionType) else (annotation,)


def _has_type(value, allowed):
    if isinstance(value, bool):  # JSON true/false is no number
        return False
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def json_type_name(value):
    return {list: "JSON list", str: "JSON string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


def read_settings(path):
    """The JSON value in the file at `path`; ModelConfigError (one line) when the file is unreadable or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ModelConfigError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); fix the file") from None
    except UnicodeDecodeError:
        raise ModelConfigError(f"{path} is not a text file of JSON settings; pass a JSON file") from None
    except OSError as error:
        raise ModelConfigError(f"{path} cannot be read ({error.strerror}); pass a readable JSON file") from None
