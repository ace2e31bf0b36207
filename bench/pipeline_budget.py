"""Wall time and peak memory of the tiny preset's data -> SFT -> reward model, as a user runs it.

Runs `dagster asset materialize --select '*'` into a fresh instance and store, sampling the RSS of the whole
process tree (Dagster + step subprocesses). The issue's budget on a 2-core CPU machine: <= 5 min, <= 4 GB.

    .venv/bin/python -m bench.pipeline_budget
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.common import isolated_env, run_measured
from rlhf_assets.presets import PROJECT_ROOT

BUDGET_SECONDS = 300
BUDGET_BYTES = 4 * 1024**3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
                   "--select", "*"]
        measured = run_measured(command, isolated_env(root), PROJECT_ROOT, root / "materialize.log")
        if measured.returncode != 0:
            print((root / "materialize.log").read_text()[-4000:])
            raise SystemExit(f"materialization failed with code {measured.returncode}")
    gib = measured.peak_tree_rss_bytes / 1024**3
    print(f"tiny preset, whole graph (data -> base -> SFT -> RM): {measured.seconds:.0f} s wall, "
          f"peak process-tree RSS {gib:.2f} GiB")
    print(f"time / budget: {measured.seconds / BUDGET_SECONDS:.2f}   memory / budget: "
          f"{measured.peak_tree_rss_bytes / BUDGET_BYTES:.2f}")


if __name__ == "__main__":
    main()
