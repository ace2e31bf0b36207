"""Step start-up: launch to the step's first line of work, as a plain subprocess vs through the warm worker.

    .venv/bin/python -m bench.step_startup [--repeats 3]

Every one-process step program is launched both ways, alternating, with the same (empty) config and no input
channels: `run_step` logs "step started N s after launch" once its imports and set-up are done, then the step stops
at its first missing input, so both sides do exactly the same work and only the start-up is timed. The worker is
started fresh in a temporary directory; its own cold start (the first step after it is gone) is printed apart.
Target: median start-up <= 2 s through the worker.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhf_assets.compute.warm.protocol import DIR_ENV, stop_workers
from rlhf_assets.contract import LAUNCHED_AT_ENV
from rlhf_assets.presets import PROJECT_ROOT

STEPS = ("base_model", "sft", "reward", "dpo", "ppo", "eval_responses", "toxicity_model", "toxicity_scores",
         "auto_preference")
STARTED = re.compile(r"step started ([0-9.]+) s after launch")
TARGET_SECONDS = 2.0


def startup_seconds(step: str, warm: bool, config: Path, env: dict[str, str]) -> float:
    """Seconds from launch to the step's "step started" line."""
    module = f"rlhf_assets.steps.{step}"
    prefix = [sys.executable, "-m", "rlhf_assets.compute.warm.client"] if warm else [sys.executable, "-m"]
    done = subprocess.run([*prefix, module, "--request", str(config)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=600, env={**env, LAUNCHED_AT_ENV: repr(time.time())})
    found = STARTED.search(done.stderr)
    if found is None:
        raise SystemExit(f"{module} never started ({'warm' if warm else 'plain'}):\n{done.stderr[-3000:]}")
    return float(found.group(1))


def main() -> None:
    """Print each step's median start-up both ways, the medians over all steps and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text("{}")
        env = {**os.environ, DIR_ENV: str(Path(tmp) / "worker")}
        env.pop("RLHF_WARM_WORKER", None)
        try:
            cold = startup_seconds("base_model", warm=True, config=config, env=env)
            times: dict[str, dict[bool, list[float]]] = {step: {False: [], True: []} for step in STEPS}
            for _ in range(args.repeats):
                for step in STEPS:
                    for warm in (False, True):
                        times[step][warm].append(startup_seconds(step, warm, config, env))
        finally:
            stop_workers(Path(tmp) / "worker")
    print(f"step start-up, launch to first line of work, median of {args.repeats} alternating runs "
          f"({os.cpu_count()} CPUs)")
    print(f"{'step':<18} {'plain (s)':>10} {'warm (s)':>10} {'ratio':>7}")
    for step in STEPS:
        plain, warm = statistics.median(times[step][False]), statistics.median(times[step][True])
        print(f"{step:<18} {plain:>10.2f} {warm:>10.2f} {plain / warm:>6.1f}x")
    plain_all = statistics.median(t for step in STEPS for t in times[step][False])
    warm_all = statistics.median(t for step in STEPS for t in times[step][True])
    print(f"all steps: plain {plain_all:.2f} s vs warm {warm_all:.2f} s, ratio {plain_all / warm_all:.1f}x "
          f"(target: warm <= {TARGET_SECONDS:.0f} s: {'met' if warm_all <= TARGET_SECONDS else 'NOT met'}); "
          f"the worker's own cold start (first step): {cold:.2f} s")


if __name__ == "__main__":
    main()
