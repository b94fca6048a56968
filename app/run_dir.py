"""Re-export of `rundir.layout` (the run-directory contract lives below the verbs, where `export` reads it too)."""

from rundir.layout import (
    BACKUP_DIR,
    CONFIG_FILE,
    DATASET_FILE,
    HISTORY_FILE,
    LOGS_DIR,
    METRICS_FILE,
    MODEL_FILE,
    RunDirError,
    new_run_dir,
    path,
    read_json,
    require_run,
    write_json,
)

__all__ = [
    "BACKUP_DIR",
    "CONFIG_FILE",
    "DATASET_FILE",
    "HISTORY_FILE",
    "LOGS_DIR",
    "METRICS_FILE",
    "MODEL_FILE",
    "RunDirError",
    "new_run_dir",
    "path",
    "read_json",
    "require_run",
    "write_json",
]
