"""Wall time and peak memory of the tiny preset's whole graph, as a user runs it, with per-asset times.

Runs `dagster asset materialize --select '*'` into a fresh instance and store, sampling the RSS of the whole
process tree (Dagster + step subprocesses), then reads each asset's step duration from the instance.
Budgets on a 2-core CPU machine: data -> SFT -> RM <= 5 min; PPO <= 5 min; peak RSS <= 4 GB.

    .venv/bin/python -m bench.pipeline_budget
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from dagster import DagsterInstance

from bench.common import isolated_env, run_measured
from rlhf_assets.presets import PROJECT_ROOT

BUDGET_SECONDS = 300
BUDGET_BYTES = 4 * 1024**3


def main() -> None:
    """Materialize the whole graph once and print wall time, peak memory and per-asset times."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
                   "--select", "*"]
        measured = run_measured(command, isolated_env(root), PROJECT_ROOT, root / "materialize.log")
        if measured.returncode != 0:
            print((root / "materialize.log").read_text()[-4000:])
            raise SystemExit(f"materialization failed with code {measured.returncode}")
        with DagsterInstance.from_config(str(root / "dagster_home")) as instance:
            run = instance.get_runs(limit=1)[0]
            durations = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run.run_id)}
    gib = measured.peak_tree_rss_bytes / 1024**3
    print(f"tiny preset, whole graph: {measured.seconds:.0f} s wall, peak process-tree RSS {gib:.2f} GiB "
          f"(memory / budget {measured.peak_tree_rss_bytes / BUDGET_BYTES:.2f})")
    for step, seconds in durations.items():
        print(f"  {step:<20} {seconds:6.1f} s")
    before_ppo = sum(v for k, v in durations.items() if k != "ppo_policy")
    print(f"data -> SFT -> RM: {before_ppo:.0f} s (time / budget {before_ppo / BUDGET_SECONDS:.2f}); "
          f"PPO: {durations.get('ppo_policy', 0):.0f} s (time / budget "
          f"{durations.get('ppo_policy', 0) / BUDGET_SECONDS:.2f})")


if __name__ == "__main__":
    main()
