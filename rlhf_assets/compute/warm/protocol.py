"""What the warm worker and its clients agree on: where the worker listens, and the messages on its socket.

A client sends one request (a 4-byte length, then JSON: module, args, environment, working directory) with its
stdin/stdout/stderr attached as file descriptors (SCM_RIGHTS). The worker answers `pid <n>` once the step is
forked and `exit <code>` or `signal <n>` when it ends; the client may send `signal <n>` lines meanwhile. A client
that disconnects (killed) makes the worker SIGKILL the step's process group.

Standard library only: the client imports this before anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Variables some library reads when it is imported (cache and offline switches, thread counts, allocators): a
# worker imported them with its own values, so a client whose values differ gets a worker of its own.
IMPORT_TIME_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DATASETS_", "TOKENIZERS_", "TORCH", "PYTORCH_",
                            "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "NCCL_", "ACCELERATE_", "PYTHON", "LD_", "XDG_",
                            "MPLBACKEND", "MPLCONFIGDIR", "HOME", "TMPDIR", "DETOXIFY")
DISABLE_ENV = "RLHF_WARM_WORKER"  # "0": every local step starts as a plain subprocess
DIR_ENV = "RLHF_WARM_WORKER_DIR"
IDLE_ENV = "RLHF_WARM_WORKER_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 600.0
MAX_REQUEST_BYTES = 16 * 1024 * 1024
STREAM_FDS = (0, 1, 2)


class ProtocolError(RuntimeError):
    """A malformed or truncated message on the worker socket."""


@dataclass(frozen=True)
class WorkerPaths:
    """The socket, lock, pid and log files of the worker for one interpreter, package and environment."""

    directory: Path
    key: str

    @property
    def socket(self) -> Path:
        return self.directory / f"{self.key}.sock"

    @property
    def lock(self) -> Path:
        return self.directory / f"{self.key}.lock"

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.key}.pid"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.key}.log"


def worker_directory(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """A directory only this user can enter: whoever can connect to the socket can run code as its owner."""
    directory = Path(environ.get(DIR_ENV) or Path(tempfile.gettempdir()) / f"rlhf-assets-worker-{os.getuid()}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = directory.stat()
    if status.st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to uid {status.st_uid}, not to this user")
    if status.st_mode & 0o077:
        directory.chmod(0o700)
    return directory


def worker_key(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """Which worker may run a step for this process: same interpreter, same installed packages (the mtime of every
    import path), same import-time environment. A changed install or variable gets a new worker; the old one
    stops when idle."""
    package_dir = Path(__file__).resolve().parents[2]
    parts = [os.path.realpath(sys.executable), str(package_dir)]
    for entry in sys.path:  # an install or uninstall changes its site-packages directory's mtime
        if not entry.endswith(("site-packages", "dist-packages")):
            parts.append(entry)
            continue
        try:
            parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}:missing")
    parts += sorted(f"{name}={value}" for name, value in environ.items()
                    if name.startswith(IMPORT_TIME_ENV_PREFIXES))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def worker_paths(environ: dict[str, str] | os._Environ = os.environ) -> WorkerPaths:
    """The worker files for this process."""
    return WorkerPaths(worker_directory(environ), worker_key(environ))


def send_request(sock: socket.socket, request: dict[str, object], fds: tuple[int, ...] = STREAM_FDS) -> None:
    """Send one request with the given file descriptors attached to its first bytes."""
    body = json.dumps(request).encode()
    socket.send_fds(sock, [struct.pack("!I", len(body))], list(fds))
    sock.sendall(body)


def receive_request(sock: socket.socket) -> tuple[dict[str, object], list[int]]:
    """One request and the file descriptors that came with it (the caller owns and closes them)."""
    header, fds, _, _ = socket.recv_fds(sock, 4, len(STREAM_FDS))
    try:
        if len(header) != 4:
            raise ProtocolError("truncated request header")
        (length,) = struct.unpack("!I", header)
        if length > MAX_REQUEST_BYTES:
            raise ProtocolError(f"request of {length} bytes refused")
        body = bytearray()
        while len(body) < length:
            chunk = sock.recv(min(65536, length - len(body)))
            if not chunk:
                raise ProtocolError("request cut short")
            body += chunk
        request = json.loads(body)
        if len(fds) != len(STREAM_FDS) or not isinstance(request, dict):
            raise ProtocolError("a request carries a JSON object and three streams")
        return request, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def exit_line(wait_status: int) -> bytes:
    """The worker's report of how a step ended, from `os.waitpid`'s status."""
    if os.WIFSIGNALED(wait_status):
        return f"signal {os.WTERMSIG(wait_status)}\n".encode()
    return f"exit {os.waitstatus_to_exitcode(wait_status)}\n".encode()


def running_workers(directory: Path) -> dict[int, Path]:
    """Live workers in `directory`: pid -> socket (stale pid files, of workers killed without cleaning up, are
    skipped)."""
    workers = {}
    for pid_file in sorted(directory.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            continue
        workers[pid] = WorkerPaths(directory, pid_file.stem).socket
    return workers


def stop_workers(directory: Path) -> list[int]:
    """Ask every worker in `directory` to stop (SIGTERM: steps still running in it are killed with it)."""
    stopped = []
    for pid in running_workers(directory):
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except OSError:
            continue
    return stopped
