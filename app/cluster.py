"""The cluster of a multi-worker run, read from TF_CONFIG without importing TensorFlow.

`MultiWorkerMirroredStrategy` reads the cluster from the TF_CONFIG environment variable:
`{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": I}}`.
`--workers host0:port,host1:port --worker-index I` writes it for the user (`apply_worker_flags`).

Who writes what (the Keras multi-worker guide's rule): the chief (worker 0, or the task of type
"chief") writes the run directory; every other worker writes the same files to its own directory
(`worker_directory`), so no two processes write one file. That directory is a fixed path under the
system's temporary folder, named after the cluster and the task, so a restarted worker finds its own
resume checkpoint there; it is removed when the run finishes.
"""

import hashlib
import json
import os
import shutil
import tempfile

from models.errors import ModelConfigError

EXAMPLE = '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''


def tf_config_for(workers, index):
    """The TF_CONFIG text of worker `index` in the cluster of `workers` ("host:port,host:port")."""
    addresses = [w.strip() for w in str(workers).split(",") if w.strip()]
    if len(addresses) < 2:
        raise ModelConfigError(f"--workers needs at least two host:port addresses separated by commas, got {workers!r}")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ModelConfigError(f"--workers: {address!r} is not host:port (e.g. 10.0.0.2:12345)")
    if len(set(addresses)) != len(addresses):
        raise ModelConfigError(f"--workers names an address twice: {workers!r}; give each worker its own host:port")
    if index is None or not 0 <= int(index) < len(addresses):
        raise ModelConfigError(f"--workers names {len(addresses)} workers: add --worker-index I with 0 <= I < {len(addresses)} (0 on the chief)")
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": int(index)}})


def apply_worker_flags(workers, index, environ=os.environ):
    """Set TF_CONFIG from `--workers` / `--worker-index` (when given; they win over a TF_CONFIG already set)."""
    if workers is None:
        if index is not None:
            raise ModelConfigError("--worker-index needs --workers host:port,host:port (the whole cluster, the same on every worker)")
        return
    environ["TF_CONFIG"] = tf_config_for(workers, index)


def distribute_with_workers(distribute, workers):
    """The --distribute a run with `--workers` takes: multiworker (implied when not given); one line for another."""
    if workers is None:
        return distribute
    if distribute not in (None, "multiworker"):
        raise ModelConfigError(f"--workers sets up a cluster for --distribute multiworker, not --distribute {distribute}; drop one of them")
    return "multiworker"


def check_multiworker(distribute, environ=os.environ):
    """`--distribute multiworker` needs a cluster: TF_CONFIG or --workers; one line naming the fix otherwise."""
    if distribute != "multiworker":
        return
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise ModelConfigError(
            "--distribute multiworker needs the cluster in the TF_CONFIG environment variable, which is not set "
            f"(without it training would run on one replica); set it on every worker, e.g. TF_CONFIG={EXAMPLE}, "
            "or pass --workers host:port,host:port --worker-index I (the same list on every worker, I its place in it); "
            "on one machine use --distribute mirrored"
        )
    task_of(environ)


def task_of(environ=os.environ):
    """(type, index, cluster) of this process in TF_CONFIG; ("worker", 0, {}) without one."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return "worker", 0, {}
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelConfigError(f"TF_CONFIG is not valid JSON ({error.msg}, column {error.colno}); set it as e.g. TF_CONFIG={EXAMPLE}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict) or not isinstance(spec.get("task"), dict):
        raise ModelConfigError(f"TF_CONFIG needs a \"cluster\" and a \"task\" object; set it as e.g. TF_CONFIG={EXAMPLE}")
    task = spec["task"]
    return str(task.get("type", "worker")), int(task.get("index", 0)), spec["cluster"]


def is_chief(environ=os.environ):
    """True for the process that writes the run directory: the "chief" task, else worker 0 (also a lone process)."""
    kind, index, cluster = task_of(environ)
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def worker_directory(environ=os.environ, root=None):
    """This non-chief worker's own directory: fixed for its cluster and task (a restart finds it again)."""
    kind, index, cluster = task_of(environ)
    key = hashlib.sha1(json.dumps(cluster, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(root or tempfile.gettempdir(), f"adaptune-{kind}-{index}-{key}")


def directory_of_this_process(run_directory, distribute, fresh=False, given=None, environ=os.environ):
    """Where this process writes: the run directory on the chief (and without multiworker), else its own
    directory, `given` (--worker-dir) or `worker_directory` (emptied first for a `fresh` run: what it
    holds is an earlier, abandoned run's)."""
    if distribute != "multiworker" or is_chief(environ):
        return run_directory
    directory = given or worker_directory(environ)
    if fresh and os.path.isdir(directory):
        shutil.rmtree(directory, ignore_errors=True)
    return directory
