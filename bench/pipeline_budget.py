"""Wall time and peak memory of the tiny preset's whole graph, as a user runs it, then an unchanged re-run.

Runs the main job's `dagster asset materialize` (every asset but each policy's `human_eval_results`, which waits
for labels) into a fresh instance, store and warm step worker, sampling the RSS of the whole process tree (Dagster,
the worker and its forked steps); reads each asset's step time from the instance and splits it into the step's
start-up (launch to its first line of work, which the step reports) and the rest; then runs the same command again
(nothing changed: every step result is reused). Budgets on a 2-core CPU machine: whole graph <= 5 min, median step
start-up <= 2 s, unchanged re-run <= 10 s, peak RSS <= 4 GB.

    .venv/bin/python -m bench.pipeline_budget [--keep DIR] [--compare-plain]

It also prints the fresh run's `policy_comparison` tables, so figures quoted beside the timings come from the same
run. `--keep DIR` builds the project in DIR and keeps it. `--compare-plain` then builds the graph once more in
another fresh project with every step a plain subprocess (`RLHF_WARM_WORKER=0`, the launch before the warm worker)
and prints both walls and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance

from bench.common import Measured, isolated_env, run_measured
from rlhf_assets.compute.warm.protocol import DIR_ENV, stop_workers
from rlhf_assets.presets import PROJECT_ROOT

BUDGET_GRAPH_SECONDS = 300
BUDGET_STAGE_SECONDS = 300
BUDGET_RERUN_SECONDS = 10
BUDGET_STARTUP_SECONDS = 2.0
BUDGET_BYTES = 4 * 1024**3
CHECK_SUFFIXES = ("_rows_clean", "_not_worse", "_not_degenerate", "_not_dispreferred", "_within_bound", "_beats_sft",
                  "_degenerate_text")  # asset-check steps (a fraction of a second each) are left out of the table
TRAINING = ("hh_raw", "preference_dataset", "base_model", "sft_model", "reward_model", "judge_model")
EVALUATION = ("rtp_records", "rtp_prompts", "red_team_prompts", "toxicity_model", "sft_model__eval_responses",
              "sft_model__toxicity_scores", "sft_model__red_team_toxicity_scores", "ppo_policy__eval_responses",
              "ppo_policy__toxicity_scores", "ppo_policy__red_team_toxicity_scores", "ppo_policy__auto_preference",
              "ppo_policy__overoptimisation_curve", "ppo_policy__human_eval_tasks", "dpo_policy__eval_responses",
              "dpo_policy__toxicity_scores", "dpo_policy__red_team_toxicity_scores", "dpo_policy__auto_preference",
              "dpo_policy__human_eval_tasks", "policy_comparison")


def _materialize(root: Path, log: str, plain: bool = False) -> Measured:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
               "--select", 'not tag:"rlhf/waits_for"="people"']  # as the main job: human eval waits for people
    env = {**isolated_env(root), **({"RLHF_WARM_WORKER": "0"} if plain else {})}
    measured = run_measured(command, env, PROJECT_ROOT, root / log)
    if measured.returncode != 0:
        print((root / log).read_text()[-4000:])
        raise SystemExit(f"materialization failed with code {measured.returncode}")
    return measured


def _step_times(instance: DagsterInstance) -> dict[str, tuple[float, float | None]]:
    """Each asset step of the latest run: (seconds, of which the step process's start-up, None for steps that run in
    the Dagster process)."""
    run = instance.get_runs(limit=1)[0]
    startups = {}
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        metadata = entry.dagster_event.step_materialization_data.materialization.metadata
        if "step_startup_seconds" in metadata:
            startups[entry.dagster_event.step_key] = float(metadata["step_startup_seconds"].value)
    return {s.step_key: (s.end_time - s.start_time, startups.get(s.step_key))
            for s in instance.get_run_step_stats(run.run_id) if not s.step_key.endswith(CHECK_SUFFIXES)}


def main() -> None:
    """Materialize the whole graph, print wall time, peak memory and per-asset times, then re-run unchanged."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="build the project here and keep it")
    parser.add_argument("--compare-plain", action="store_true",
                        help="also build the graph with every step a plain subprocess and print the ratio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() if args.keep is None else nullcontext(str(args.keep)) as tmp:
        root = Path(tmp)
        try:
            fresh = _materialize(root, "fresh.log")
            with DagsterInstance.from_config(str(root / "dagster_home")) as instance:
                times = _step_times(instance)
                comparison = instance.get_latest_materialization_event(AssetKey("policy_comparison"))
                tables = {name: comparison.asset_materialization.metadata[name].value
                          for name in ("policy_table", "toxicity_by_prompt_set")}
            rerun = _materialize(root, "rerun.log")
            plain = _materialize(root / "plain", "fresh.log", plain=True) if args.compare_plain else None
        finally:
            stop_workers(Path(isolated_env(root)[DIR_ENV]))
    durations = {step: seconds for step, (seconds, _) in times.items()}
    startups = [startup for _, startup in times.values() if startup is not None]
    gib = fresh.peak_tree_rss_bytes / 1024**3
    print(f"tiny preset, whole graph (fresh): {fresh.seconds:.0f} s wall (time / budget "
          f"{fresh.seconds / BUDGET_GRAPH_SECONDS:.2f}), peak RSS of Dagster, the warm worker and the steps "
          f"{gib:.2f} GiB (memory / budget {fresh.peak_tree_rss_bytes / BUDGET_BYTES:.2f})")
    print(f"  {'asset step':<45} {'total':>7} {'start-up':>9} {'work':>7}")
    for step, (seconds, startup) in sorted(times.items(), key=lambda item: -item[1][0]):
        split = f"{startup:8.2f}s {seconds - startup:6.1f}s" if startup is not None else f"{'-':>9} {'-':>7}"
        print(f"  {step:<45} {seconds:6.1f}s {split}")
    median = statistics.median(startups) if startups else float("nan")
    slowest = max(startups, default=0.0)
    print(f"step start-up: median {median:.2f} s over {len(startups)} step processes, max {slowest:.2f} s (the "
          f"first starts the worker), sum {sum(startups):.0f} s (median / budget "
          f"{median / BUDGET_STARTUP_SECONDS:.2f})")
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
    if plain is not None:
        print(f"the same graph with every step a plain subprocess: {plain.seconds:.0f} s wall vs {fresh.seconds:.0f} s "
              f"through the warm worker, ratio {plain.seconds / fresh.seconds:.2f}; peak RSS "
              f"{plain.peak_tree_rss_bytes / 1024**3:.2f} GiB")


if __name__ == "__main__":
    main()
