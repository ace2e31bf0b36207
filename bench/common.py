"""Helpers for benchmark scripts: isolated environments and process-tree measurements."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from rlhf_assets.compute.warm.protocol import DIR_ENV, running_workers


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_tree_rss_bytes: int
    returncode: int


def isolated_env(root: Path) -> dict[str, str]:
    """Environment with a fresh Dagster instance, artifact store, scratch dir, labeling database and warm step
    worker under `root` (so a measured run pays for starting its own worker)."""
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(root / "dagster_home"), "RLHF_ARTIFACT_ROOT": str(root / "artifacts"),
            "RLHF_SCRATCH_DIR": str(root / "scratch"), "RLHF_LABELING_DB": str(root / "labeling" / "labels.sqlite"),
            DIR_ENV: str(root / "warm-workers")}


def _worker_roots(env: dict[str, str]) -> list[psutil.Process]:
    """The warm workers a measured command started (they run in their own session, outside its process tree)."""
    directory = env.get(DIR_ENV)
    if not directory or not Path(directory).is_dir():
        return []
    found = []
    for pid in running_workers(Path(directory)):
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def run_measured(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Measured:
    """Run a command, sampling the summed RSS of its whole process tree (and of the warm worker with its forked
    steps) every 100 ms. Summed RSS counts pages a forked step shares with the worker twice: an upper bound."""
    peak = 0
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            root = psutil.Process(process.pid)
            while not done.is_set():
                try:
                    roots = [root, *_worker_roots(env)]
                    tree = [p for r in roots for p in (r, *r.children(recursive=True))]
                    peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
                except psutil.Error:
                    pass
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
    return Measured(elapsed, peak, returncode)
