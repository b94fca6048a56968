"""What happens when things go wrong (README): bad input is one line, a run directory has one writer,
its files are written whole, and the commands a run prints can be pasted as they are."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.app.helpers import FAST_TRAIN, REPO, run_cli

VERBS = ("app.train", "app.evaluate", "app.export", "app.tune", "app.compare")

# Runs a verb's main with --help and prints which heavy packages were imported by then.
HELP_PROBE = (
    "import runpy, sys; sys.argv = [{verb!r}, '--help']\n"
    "try:\n    runpy.run_module({verb!r}, run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('IMPORTED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
)


def one_line_error(result, program="python -m app.train"):
    """The single `<program>: error: ...` line of a command that failed with status 2."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# --- item 8: --help without TensorFlow, pasteable commands -------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_help_imports_neither_tensorflow_nor_keras(verb):
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE.format(verb=verb)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "IMPORTED []", result.stdout[-500:]


def test_train_help_still_lists_every_method_flag():
    result = run_cli("app.train", "--help")
    for flag in ("--tau", "--count-weight", "--regularizer", "--delta-reduction", "--fisher-head", "--penalize", "--k"):
        assert flag in result.stdout, flag


@pytest.mark.slow
def test_printed_tensorboard_command_works_for_a_path_with_spaces(tmp_path):
    run = tmp_path / "my runs" / "it's one"
    result = run_cli("app.train", "--epochs", "1", "--out", run, *FAST_TRAIN)
    line = next(line for line in result.stdout.splitlines() if "TensorBoard:" in line)
    words = shlex.split(line.split("TensorBoard:", 1)[1])
    assert words[:2] == ["tensorboard", "--logdir"] and len(words) == 3, words
    assert os.path.samefile(os.path.join(REPO, words[2]), run / "logs")
