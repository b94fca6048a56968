"""Run the command-line entry points the way a user does: in a subprocess from the repo root."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

# Small and quick: ResNet-20 at 16 px on the embedded default data.
FAST_TRAIN = ["--backbone", "resnet20", "--image-size", "16", "--batch-size", "64", "--quiet"]


def run_cli(module, *args, timeout=600, env=None, check=True):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def read_json(path):
    with open(path) as f:
        return json.load(f)
