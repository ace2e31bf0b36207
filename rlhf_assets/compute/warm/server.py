"""The warm worker: imports the step programs' libraries once, then forks one child per step.

    python -m rlhf_assets.compute.warm.server --socket PATH [--idle-seconds N]

Started by the first `client.py` that finds no worker (never by hand). At start it imports every step module,
then forgets this package's own modules, so each child imports them fresh from disk: what the worker keeps warm is
torch, transformers, TRL, datasets and the rest, never our code. The loop is single-threaded (a selector over the
listening socket, the clients and a SIGCHLD wake-up pipe): forking a multi-threaded process could leave a child
holding a lock no thread will release. Torch starts its intra-op threads on first use, so the children start with
no threads of the parent's. A child runs in its own process group and dies with the worker
(`PR_SET_PDEATHSIG`); a client that disconnects has its child's group killed. The worker exits after
`--idle-seconds` without a step.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib
import io
import os
import pkgutil
import random
import runpy
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

from rlhf_assets.compute.warm.protocol import DEFAULT_IDLE_SECONDS, WorkerPaths, exit_line, receive_request

PACKAGE = "rlhf_assets"
STEPS_PACKAGE = "rlhf_assets.steps"
PR_SET_PDEATHSIG = 1


def log(message: str) -> None:
    """One line in the worker's log file (its stderr)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


def preload() -> list[str]:
    """Import every step module (and so every library a step uses), then drop this package's own modules so
    children import the code as it is on disk when they start. Returns the libraries kept warm."""
    steps = importlib.import_module(STEPS_PACKAGE)
    for module in pkgutil.iter_modules(steps.__path__):
        try:
            importlib.import_module(f"{STEPS_PACKAGE}.{module.name}")
        except Exception as error:  # a step that cannot import here still runs (and fails) in its own child
            log(f"could not preload {STEPS_PACKAGE}.{module.name}: {type(error).__name__}: {error}")
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]  # this loop's own functions keep working: they hold their modules' globals
    return sorted({name.split(".")[0] for name in sys.modules})


def os_thread_count() -> int:
    """Threads of this process as the kernel counts them (native threads included, which `threading` misses)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the client's disconnect still kills the step
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _standard_streams(environ: dict[str, str]) -> None:
    """New sys.stdin/stdout/stderr on fds 0-2, buffered as a fresh interpreter with this environment would."""
    unbuffered = bool(environ.get("PYTHONUNBUFFERED"))
    encoding = environ.get("PYTHONIOENCODING", "utf-8").split(":")[0] or "utf-8"
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding, write_through=unbuffered,
                                  line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=encoding, errors="backslashreplace",
                                  line_buffering=True, write_through=unbuffered)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run_module(module: str, args: list[str]) -> int:
    """Run `module` as `python -m module args` does, and shut down as the interpreter would."""
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # wait for non-daemon threads, as interpreter exit does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def run_child(request: dict[str, object], fds: list[int], inherited: list[int]) -> NoReturn:
    """In the forked child: become the step process the client asked for, run it, and exit with its status."""
    code = 1
    try:
        os.setpgid(0, 0)
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            os.close(fd)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        environ = {str(k): str(v) for k, v in dict(request["env"]).items()}  # type: ignore[call-overload]
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(str(request["cwd"]))
        sys.path[0] = str(request["cwd"])  # as `python -m` puts the working directory first
        _standard_streams(environ)
        random.seed()  # the parent's random state would otherwise repeat in every child
        code = _run_module(str(request["module"]), [str(a) for a in request["args"]])  # type: ignore[union-attr]
    except BaseException:
        traceback.print_exc()
    if code < 0:  # died of a signal, as a plain process would (the client reproduces it)
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


class Worker:
    """The accept / fork / reap loop."""

    def __init__(self, listener: socket.socket, idle_seconds: float) -> None:
        self.listener = listener
        self.idle_seconds = idle_seconds
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket | None] = {}  # child pid -> its client's connection (None: gone)
        self.clients: dict[socket.socket, int] = {}
        self.last_active = time.monotonic()
        self.stopping = False
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake_read, self.wake_write = wake_read, wake_write
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self.selector.register(wake_read, selectors.EVENT_READ, self._reap)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def serve(self) -> None:
        """Until stopped or idle: accept steps, relay signals, report exits."""
        while not self.stopping:
            timeout = None if self.children else self.idle_seconds - (time.monotonic() - self.last_active)
            if timeout is not None and timeout <= 0:
                log(f"idle for {self.idle_seconds:.0f} s: stopping")
                break
            for key, _ in self.selector.select(timeout):
                key.data(key.fileobj)
            self._reap(None)
        for pid in list(self.children):
            _kill_group(pid, signal.SIGKILL)

    def _accept(self, _: object) -> None:
        connection, _ = self.listener.accept()
        connection.settimeout(10)
        try:
            request, fds = receive_request(connection)
        except (OSError, ValueError) as error:
            log(f"refused a request: {error}")
            connection.close()
            return
        inherited = [self.listener.fileno(), self.wake_read, self.wake_write, connection.fileno(),
                     *(c.fileno() for c in self.clients)]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(request, fds, inherited)
        for fd in fds:
            os.close(fd)
        log(f"step {request.get('module')} started as pid {pid}")
        self.children[pid] = connection
        self.clients[connection] = pid
        self.last_active = time.monotonic()
        try:
            connection.sendall(f"pid {pid}\n".encode())
        except OSError:
            self._client_gone(connection)
            return
        connection.setblocking(False)
        self.selector.register(connection, selectors.EVENT_READ, self._from_client)

    def _from_client(self, connection: socket.socket) -> None:
        try:
            data = connection.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._client_gone(connection)
            return
        pid = self.clients[connection]
        for line in data.decode(errors="replace").splitlines():
            word, _, value = line.partition(" ")
            if word == "signal" and value.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, int(value))

    def _client_gone(self, connection: socket.socket) -> None:
        """The client was killed (or closed early): its step must not outlive it."""
        pid = self.clients.pop(connection)
        self._forget(connection)
        if pid in self.children:
            log(f"client of pid {pid} disconnected: killing its process group")
            self.children[pid] = None
            _kill_group(pid, signal.SIGKILL)

    def _forget(self, connection: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(connection)
        connection.close()

    def _reap(self, _: object) -> None:
        try:
            while os.read(self.wake_read, 512):
                pass
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            self.last_active = time.monotonic()
            log(f"pid {pid} ended: {exit_line(status).decode().strip()}")
            if connection is not None:
                self.clients.pop(connection, None)
                try:
                    connection.setblocking(True)
                    connection.sendall(exit_line(status))
                except OSError:
                    pass
                self._forget(connection)


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def main(argv: list[str] | None = None) -> None:
    """Preload, listen on the socket (only once warm: a client waits for it), serve, clean up."""
    parser = argparse.ArgumentParser(description="rlhf-assets warm step worker (started by the local backend)")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--idle-seconds", type=float, default=DEFAULT_IDLE_SECONDS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    libraries = preload()
    threads = os_thread_count()
    log(f"preloaded {len(libraries)} top-level modules in {time.monotonic() - started:.1f} s; {threads} thread(s)")
    if threads > 1:
        log("warning: more than one thread before forking; a library started a thread at import")
    args.socket.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(args.socket))
    args.socket.chmod(0o600)
    listener.listen(64)
    pid_file = WorkerPaths(args.socket.parent, args.socket.stem).pid_file
    pid_file.write_text(str(os.getpid()))
    identity = args.socket.stat().st_ino
    try:
        Worker(listener, args.idle_seconds).serve()
    finally:
        listener.close()
        try:  # a newer worker may have taken the path over: remove only our own socket
            if args.socket.stat().st_ino == identity:
                args.socket.unlink()
                pid_file.unlink(missing_ok=True)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
