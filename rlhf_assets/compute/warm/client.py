"""Stands in for a step process: `python -m rlhf_assets.compute.warm.client rlhf_assets.steps.<step> [args]`.

It asks the warm worker (started here on first use) to fork the step with this process's environment, working
directory and standard streams, forwards SIGINT / SIGTERM / SIGHUP to it, and exits as the step did (its code, or
by the same signal). Killing this process kills the step: the worker sees the connection close. Without a usable
worker (disabled with `RLHF_WARM_WORKER=0`, or it failed to start) it becomes the step itself (`exec`), so a
step never fails because the worker did.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from typing import NoReturn

from rlhf_assets.compute.warm.protocol import (
    DEFAULT_IDLE_SECONDS,
    DISABLE_ENV,
    IDLE_ENV,
    WorkerPaths,
    send_request,
    worker_paths,
)

START_TIMEOUT_SECONDS = 300.0  # preloading takes ~6 s on an idle 2-core machine, far longer when it is loaded
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class WorkerUnavailable(RuntimeError):
    """No worker could be reached or started; the step runs as a plain process instead."""


def _connect(paths: WorkerPaths) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(paths.socket))
        return sock
    except OSError:
        sock.close()
        return None


def _start_worker(paths: WorkerPaths) -> subprocess.Popen:
    """Start a worker in its own session (a run killed with its process group must not take it along)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}
    idle = os.environ.get(IDLE_ENV, str(DEFAULT_IDLE_SECONDS))
    with paths.log.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rlhf_assets.compute.warm.server", "--socket", str(paths.socket),
             "--idle-seconds", idle],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environment, start_new_session=True,
        )


def connect_or_start(paths: WorkerPaths) -> socket.socket:
    """A connection to the warm worker, starting one (once, under a lock shared by concurrent clients)."""
    sock = _connect(paths)
    if sock is not None:
        return sock
    with paths.lock.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(paths)
        if sock is not None:
            return sock
        process = _start_worker(paths)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            sock = _connect(paths)
            if sock is not None:
                return sock
            if process.poll() is not None:
                raise WorkerUnavailable(f"the worker exited with code {process.returncode} (log: {paths.log})")
            time.sleep(0.05)
        process.kill()
        raise WorkerUnavailable(f"the worker was not ready after {START_TIMEOUT_SECONDS:.0f} s (log: {paths.log})")


def _read_line(sock: socket.socket, buffer: bytearray) -> str | None:
    while b"\n" not in buffer:
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        except OSError:  # reset: the worker is gone
            return None
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


def _exit_as(line: str) -> NoReturn:
    word, _, value = line.partition(" ")
    if word == "signal":
        signum = int(value)
        for forwarded in FORWARDED_SIGNALS:
            signal.signal(forwarded, signal.SIG_DFL)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        sys.exit(128 + signum)
    sys.exit(int(value))


def run_in_worker(module: str, args: list[str]) -> NoReturn:
    """Run `module` in the warm worker and exit as it did."""
    sock = connect_or_start(worker_paths())
    send_request(sock, {"module": module, "args": args, "env": dict(os.environ), "cwd": os.getcwd()})
    buffer = bytearray()
    started = _read_line(sock, buffer)
    if started is None or not started.startswith("pid "):
        raise WorkerUnavailable(f"the worker did not start the step (answered {started!r})")

    def forward(signum: int, _: object) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(f"signal {signum}\n".encode())

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    ended = _read_line(sock, buffer)
    if ended is None:
        print(f"error: the warm worker ended before step {module} reported its exit", file=sys.stderr, flush=True)
        sys.exit(1)
    _exit_as(ended)


def exec_directly(module: str, args: list[str]) -> NoReturn:
    """Become `python -m module args`: what the local backend ran before the worker existed."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def main(argv: list[str] | None = None) -> NoReturn:
    module, *args = argv if argv is not None else sys.argv[1:]
    if os.environ.get(DISABLE_ENV) == "0":
        exec_directly(module, args)
    try:
        run_in_worker(module, args)
    except (WorkerUnavailable, OSError) as error:
        print(f"warning: warm worker unavailable ({error}); starting {module} as a plain process",
              file=sys.stderr, flush=True)
        exec_directly(module, args)


if __name__ == "__main__":
    main()
