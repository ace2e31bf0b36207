"""The warm step worker behaves as a plain `python -m` process: same output, streams, exit, signals and death.

Every test runs `tests/warm_probe.py` through the real client and worker (a private worker directory per module)
and, where it matters, directly, and compares what the program saw and did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlhf_assets.compute.warm.protocol import DIR_ENV, running_workers, stop_workers, worker_paths
from rlhf_assets.presets import PROJECT_ROOT

pytestmark = pytest.mark.process
PROBE = "tests.warm_probe"


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("worker")
    env = {**os.environ, DIR_ENV: str(directory), "PROBE_VALUE": "from the caller"}
    env.pop("RLHF_WARM_WORKER", None)
    yield env
    stop_workers(directory)


def _run(env: dict[str, str], *args: str, warm: bool = True, stdin: str = "") -> subprocess.CompletedProcess:
    prefix = ["-m", "rlhf_assets.compute.warm.client"] if warm else ["-m"]
    return subprocess.run([sys.executable, *prefix, PROBE, *args], cwd=PROJECT_ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def _report(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.splitlines()[0])


def test_a_step_sees_and_computes_what_it_would_as_a_plain_process(worker_env: dict[str, str]) -> None:
    warm = _run(worker_env, "echo", "--flag", "x y", stdin="lines\nfrom stdin\n")
    plain = _run(worker_env, "echo", "--flag", "x y", warm=False, stdin="lines\nfrom stdin\n")
    assert warm.returncode == plain.returncode == 0, warm.stderr + plain.stderr
    warm_report, plain_report = _report(warm), _report(plain)
    assert warm_report["preloaded"] == {"torch": True, "transformers": True, "rlhf_assets.steps.sft": False}, \
        "libraries come warm, this package's code is imported fresh by every step"
    assert plain_report["preloaded"] == {"torch": False, "transformers": False, "rlhf_assets.steps.sft": False}
    for report in (warm_report, plain_report):
        del report["preloaded"]
    assert warm_report == plain_report  # argv, cwd, environment, stdin, torch's result and thread count, __main__
    assert warm_report["stdin"] == "lines\nfrom stdin\n" and warm_report["probe_env"] == "from the caller"
    assert warm.stderr.strip() == plain.stderr.strip() == "to stderr"


def test_exit_codes_and_exceptions_come_back_as_from_a_plain_process(worker_env: dict[str, str]) -> None:
    assert _run(worker_env, "exit", "3").returncode == _run(worker_env, "exit", "3", warm=False).returncode == 3
    warm, plain = _run(worker_env, "raise"), _run(worker_env, "raise", warm=False)
    assert warm.returncode == plain.returncode == 1
    assert "RuntimeError: probe failed on purpose" in warm.stderr


def _start_waiting(env: dict[str, str], pid_file: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "rlhf_assets.compute.warm.client", PROBE, "wait",
                                str(pid_file)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    return process


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_sigint_reaches_the_step_which_ends_as_a_plain_process_would(worker_env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    """What Dagster's Pipes client sends on cancel: the step gets KeyboardInterrupt and dies of SIGINT."""
    process = _start_waiting(worker_env, tmp_path / "pid")
    step = int((tmp_path / "pid").read_text())
    assert step != process.pid, "the step runs in the worker's child, not in the client"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == -signal.SIGINT
    assert "KeyboardInterrupt" in process.stderr.read()
    assert _gone(step)


def test_killing_the_client_kills_the_step(worker_env: dict[str, str], tmp_path: Path) -> None:
    """A SIGKILLed run (or its killed process group) must not leave its step training on."""
    process = _start_waiting(worker_env, tmp_path / "pid")
    step = int((tmp_path / "pid").read_text())
    process.kill()
    process.wait(timeout=60)
    assert _gone(step), "the step outlived its client"


def test_one_worker_serves_every_step_and_the_cli_lists_and_stops_it(worker_env: dict[str, str]) -> None:
    assert _run(worker_env, "exit", "0").returncode == 0
    directory = Path(worker_env[DIR_ENV])
    workers = running_workers(directory)
    assert len(workers) == 1
    assert _run(worker_env, "exit", "3").returncode == 3
    assert running_workers(directory) == workers, "the next step was served by the same worker"
    assert oct(directory.stat().st_mode & 0o777) == "0o700", "only this user may ask the worker to run code"
    listed = subprocess.run([sys.executable, "-m", "rlhf_assets.cli", "workers"], env=worker_env,
                            capture_output=True, text=True, check=True).stdout
    assert f"pid {next(iter(workers))}" in listed
    stopped = subprocess.run([sys.executable, "-m", "rlhf_assets.cli", "workers", "stop"], env=worker_env,
                             capture_output=True, text=True, check=True).stdout
    assert "stopped 1 worker(s)" in stopped
    assert _gone(next(iter(workers)))
    assert _run(worker_env, "exit", "0").returncode == 0, "the next step starts a new worker"


def test_another_import_time_environment_gets_its_own_worker(worker_env: dict[str, str]) -> None:
    """HF_HUB_OFFLINE and friends are read when a library is imported: a worker never serves other values."""
    assert worker_paths(worker_env).key != worker_paths({**worker_env, "HF_HUB_OFFLINE": "1"}).key
    assert worker_paths(worker_env).key == worker_paths({**worker_env, "DAGSTER_PIPES_CONTEXT": "x"}).key


def test_a_worker_that_cannot_start_leaves_the_step_to_run_as_a_plain_process(worker_env: dict[str, str],
                                                                            tmp_path: Path) -> None:
    broken = {**worker_env, DIR_ENV: str(tmp_path), "RLHF_WARM_WORKER_IDLE_SECONDS": "not a number"}
    done = _run(broken, "exit", "0")
    assert done.returncode == 0
    assert "warm worker unavailable" in done.stderr and "starting tests.warm_probe as a plain process" in done.stderr
    assert _report(done)["preloaded"]["torch"] is False


def test_disabled_worker_runs_the_step_directly(worker_env: dict[str, str]) -> None:
    done = _run({**worker_env, "RLHF_WARM_WORKER": "0"}, "exit", "0")
    assert done.returncode == 0 and _report(done)["preloaded"]["torch"] is False
