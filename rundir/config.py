"""One validated training configuration: built from flags, saved as the run's config.json."""

import dataclasses
import json
import math

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(f"unknown configuration keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))
