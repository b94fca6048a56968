"""`python -m app.tune --distributed`: KerasTuner's own chief/worker mode, and a local cluster of it.

KerasTuner reads three environment variables: `KERASTUNER_TUNER_ID` ("chief" on the process that
holds the oracle, "tuner0", "tuner1", ... on the workers), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT` (where the chief's oracle listens, the same on every process). The chief
serves trials and waits; each worker asks it for a trial, trains it, reports the score and asks again
until the oracle has no trial left. The oracle draws the trials in the order they are asked for from
its own seeded random state, and every trial trains from `--seed`, so a search with W workers runs
the trials a serial search runs and scores them the same; only who trains which, and when, differs.

Every process gets `--out`: trial folders are per trial id and each tuner's regulariser files go to
`work/<tuner id>/`; the chief alone writes results.csv, results.md and best_config.json.
"""

import os
import sys

from models.errors import ModelConfigError

ENVIRONMENT = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
CHIEF = "chief"


def role(distributed, environ=os.environ):
    """ "serial", "chief" or "worker"; one line when --distributed lacks KerasTuner's variables (or they are set without it)."""
    given = [name for name in ENVIRONMENT if environ.get(name)]
    if not distributed:
        if given:
            raise ModelConfigError(f"{given[0]} is set, which makes KerasTuner search distributed: add --distributed, or unset {', '.join(given)}")
        return "serial"
    missing = [name for name in ENVIRONMENT if not environ.get(name)]
    if missing:
        raise ModelConfigError(
            f"--distributed needs {', '.join(missing)} in the environment (KERASTUNER_TUNER_ID=chief on the chief, tuner0, tuner1, ... "
            "on the workers; KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT: the chief's address), "
            "or --local-workers N to start a chief and N workers on this machine"
        )
    if not str(environ["KERASTUNER_ORACLE_PORT"]).isdigit():
        raise ModelConfigError(f"KERASTUNER_ORACLE_PORT must be a port number, got {environ['KERASTUNER_ORACLE_PORT']!r}")
    return "chief" if CHIEF in environ["KERASTUNER_TUNER_ID"] else "worker"


def tuner_id(environ=os.environ):
    return environ.get("KERASTUNER_TUNER_ID", "tuner0")


def work_directory(work, environ=os.environ):
    """`work/<tuner id>` in a distributed search (two tuners never write one file), else `work`."""
    if environ.get("KERASTUNER_TUNER_ID"):
        return os.path.join(work, tuner_id(environ))
    return work


def without_local_workers(argv):
    """`argv` less `--local-workers N` (or `--local-workers=N`), with `--distributed` once."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--local-workers":
            skip = True
            continue
        if arg.startswith("--local-workers="):
            continue
        kept.append(arg)
    if "--distributed" not in kept:
        kept.append("--distributed")
    return kept


def run_local(argv, workers, distributed=True, timeout=None, log_dir=None):
    """Start a chief and `workers` workers of this search on loopback, wait for all, end them all; the chief's exit status.

    Each process's output goes to `<out>/cluster-logs/<tuner id>.log` (the chief's is printed at the end).
    """
    from app.local_cluster import LOOPBACK, LocalProcesses, free_ports, python_module

    if workers < 1:
        raise ModelConfigError(f"--local-workers must be at least 1, got {workers}")
    child = without_local_workers(argv)
    out = _value_of(child, "--out") or "runs/tune-local"
    log_dir = log_dir or os.path.join(out, "cluster-logs")
    (port,) = free_ports(1)
    base = {"KERASTUNER_ORACLE_IP": LOOPBACK, "KERASTUNER_ORACLE_PORT": str(port)}
    names = [CHIEF] + [f"tuner{i}" for i in range(workers)]
    print(f"distributed search on {LOOPBACK}:{port}: a chief and {workers} workers; logs in {log_dir}", flush=True)
    with LocalProcesses(log_dir) as group:
        for name in names:
            group.start(name, python_module("app.tune", *child), env=dict(base, KERASTUNER_TUNER_ID=name))
        try:
            codes = group.wait(timeout=timeout or 24 * 3600)
        except KeyboardInterrupt:
            print("interrupted: ending the chief and the workers", file=sys.stderr)
            return 130
        sys.stdout.write(group.log(CHIEF))
    failed = [name for name in names if codes[name] != 0]
    if failed:
        raise ModelConfigError(f"{', '.join(failed)} of the distributed search failed; see {os.path.join(log_dir, failed[0] + '.log')}")
    return 0


def _value_of(argv, flag):
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
