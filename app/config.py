"""Re-export of `rundir.config` (the configuration lives below the verbs, where `export` reads it too)."""

from rundir.config import DISTRIBUTE, OPTIMIZERS, SCHEDULES, TrainConfig

__all__ = ["DISTRIBUTE", "OPTIMIZERS", "SCHEDULES", "TrainConfig"]
