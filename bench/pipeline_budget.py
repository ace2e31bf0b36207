"""Wall time and peak memory of the tiny preset's whole graph, as a user runs it, then an unchanged re-run.

Runs the main job's `dagster asset materialize` (every asset but each policy's `human_eval_results`, which waits
for labels) into a fresh instance and store, sampling the RSS of the whole
process tree (Dagster + step subprocesses), reads each asset's step duration from the instance, then runs the
same command again (nothing changed: every step result is reused). Budgets on a 2-core CPU machine: whole graph
<= 10 min, data -> SFT -> RM <= 5 min, PPO <= 5 min, unchanged re-run <= 30 s, peak RSS <= 4 GB.

    .venv/bin/python -m bench.pipeline_budget [--keep DIR]

It also prints the fresh run's `policy_comparison` tables, so figures quoted beside the timings come from the same
run. `--keep DIR` builds the project in DIR and keeps it (instance, artifacts, labeling database) for inspection.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from bench.common import Measured, isolated_env, run_measured
from rlhf_assets.presets import PROJECT_ROOT

BUDGET_GRAPH_SECONDS = 600
BUDGET_STAGE_SECONDS = 300
BUDGET_RERUN_SECONDS = 30
BUDGET_BYTES = 4 * 1024**3
CHECK_SUFFIXES = ("_rows_clean", "_not_worse", "_not_degenerate", "_not_dispreferred", "_within_bound", "_beats_sft",
                  "_degenerate_text")  # asset-check steps (a fraction of a second each) are left out of the table
TRAINING = ("hh_raw", "preference_dataset", "base_model", "sft_model", "reward_model", "judge_model")
EVALUATION = ("rtp_records", "rtp_prompts", "red_team_prompts", "toxicity_model", "sft_model__eval_responses",
              "sft_model__toxicity_scores", "sft_model__red_team_toxicity_scores", "eval_responses", "toxicity_scores",
              "red_team_toxicity_scores", "auto_preference", "human_eval_tasks", "dpo_policy__eval_responses",
              "dpo_policy__toxicity_scores", "dpo_policy__red_team_toxicity_scores", "dpo_policy__auto_preference",
              "dpo_policy__human_eval_tasks", "policy_comparison")


def _materialize(root: Path, log: str) -> Measured:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
               "--select", 'not tag:"rlhf/waits_for"="people"']  # as the main job: human eval waits for people
    measured = run_measured(command, isolated_env(root), PROJECT_ROOT, root / log)
    if measured.returncode != 0:
        print((root / log).read_text()[-4000:])
        raise SystemExit(f"materialization failed with code {measured.returncode}")
    return measured


def main() -> None:
    """Materialize the whole graph, print wall time, peak memory and per-asset times, then re-run unchanged."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="build the project here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() if args.keep is None else nullcontext(str(args.keep)) as tmp:
        root = Path(tmp)
        fresh = _materialize(root, "fresh.log")
        with DagsterInstance.from_config(str(root / "dagster_home")) as instance:
            run = instance.get_runs(limit=1)[0]
            durations = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run.run_id)
                         if not s.step_key.endswith(CHECK_SUFFIXES)}
            comparison = instance.get_latest_materialization_event(AssetKey("policy_comparison"))
            tables = {name: comparison.asset_materialization.metadata[name].value
                      for name in ("comparison", "toxicity_by_prompt_set")}
        rerun = _materialize(root, "rerun.log")
    gib = fresh.peak_tree_rss_bytes / 1024**3
    print(f"tiny preset, whole graph (fresh): {fresh.seconds:.0f} s wall (time / budget "
          f"{fresh.seconds / BUDGET_GRAPH_SECONDS:.2f}), peak process-tree RSS {gib:.2f} GiB "
          f"(memory / budget {fresh.peak_tree_rss_bytes / BUDGET_BYTES:.2f})")
    for step, seconds in sorted(durations.items(), key=lambda item: -item[1]):
        print(f"  {step:<45} {seconds:6.1f} s")
    training = sum(durations.get(k, 0.0) for k in TRAINING)
    evaluation = sum(durations.get(k, 0.0) for k in EVALUATION)
    ppo, dpo = durations.get("ppo_policy", 0.0), durations.get("dpo_policy", 0.0)
    print(f"data -> SFT -> RM and judge: {training:.0f} s (time / budget {training / BUDGET_STAGE_SECONDS:.2f}); "
          f"PPO: {ppo:.0f} s (time / budget {ppo / BUDGET_STAGE_SECONDS:.2f}); DPO: {dpo:.0f} s; evaluation of both "
          f"policies and the comparison: {evaluation:.0f} s")
    for name, table in tables.items():
        print(f"\npolicy_comparison: {name}\n{table}")
    print(f"\nunchanged re-run: {rerun.seconds:.1f} s wall (time / budget {rerun.seconds / BUDGET_RERUN_SECONDS:.2f}), "
          f"peak RSS {rerun.peak_tree_rss_bytes / 1024**3:.2f} GiB")


if __name__ == "__main__":
    main()
