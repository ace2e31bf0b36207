"""Starting real local servers for tests: a free port, and waiting until one answers HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(
    url: str, process: subprocess.Popen, log: Path, timeout: float, verify: bool | str = True
) -> None:
    """Poll `url` until it answers 2xx; fail with the server's log tail if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2, verify=verify).ok:
                return
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
