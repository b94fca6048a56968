"""Processes of a cluster on this machine: free loopback ports, and a group of processes that ends whole.

`python -m app.tune --distributed --local-workers N` starts its chief and workers with it, and the
multi-worker tests start their workers with it. Every process started through a `LocalProcesses`
is ended when the `with` block leaves, also on an error or a timeout (SIGTERM, then SIGKILL).
"""

import contextlib
import os
import socket
import subprocess
import sys
import time

LOOPBACK = "127.0.0.1"


def free_ports(count, host=LOOPBACK):
    """`count` distinct TCP ports free on `host` now (the kernel's choice; held open together so they differ)."""
    sockets = []
    try:
        for _ in range(int(count)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalProcesses:
    """Processes started together and ended together.

    Example:
    >>> with LocalProcesses() as group:
    ...     group.start("w0", [sys.executable, "-m", "app.train", ...], env={"TF_CONFIG": ...})
    ...     codes = group.wait(timeout=300)
    """

    def __init__(self, log_dir=None):
        self.log_dir = log_dir
        self.processes = {}
        self._logs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.end_all()
        return False

    def start(self, name, argv, env=None, cwd=None):
        """Start `argv` as `name` with `env` added to this process's environment; output to `log_dir/name.log`."""
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        environment.update(env or {})
        output = subprocess.DEVNULL
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            output = open(os.path.join(self.log_dir, f"{name}.log"), "a")
            self._logs.append(output)
        process = subprocess.Popen(argv, env=environment, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes[name] = process
        return process

    def log(self, name):
        """The output of `name` so far ('' without a log_dir)."""
        if not self.log_dir:
            return ""
        with open(os.path.join(self.log_dir, f"{name}.log"), errors="replace") as f:
            return f.read()

    def wait(self, names=None, timeout=600):
        """{name: exit status} once every named process (default: all) has ended; TimeoutError after `timeout` s."""
        names = list(names or self.processes)
        deadline = time.monotonic() + timeout
        codes = {}
        for name in names:
            left = max(0.0, deadline - time.monotonic())
            try:
                codes[name] = self.processes[name].wait(timeout=left)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{name} still runs after {timeout:.0f} s") from None
        return codes

    def kill(self, name):
        """End `name` at once (SIGKILL, as a crash or a preempted machine would)."""
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
        process.wait()

    def end_all(self, grace=5.0):
        """SIGTERM to every process still running, SIGKILL to those left after `grace` seconds."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            with contextlib.suppress(OSError):
                process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        self._logs = []


def python_module(module, *args):
    """The argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]
