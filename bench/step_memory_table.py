"""Per-step wall time and peak GPU memory beside each step's memory plan, from a Dagster instance's latest run.

    DAGSTER_HOME=var/miniature/small/dagster_home .venv/bin/python -m bench.step_memory_table

Used by scripts/gpu_check.sh after the `small` graph has run on a GPU at its real dimensions: the plan
(`memory_plan_rank_gib`, what a step refuses to start beyond) against what the step measured
(`peak_gpu_memory_gib`, torch's peak allocation), and the wall time of each step from Dagster's step stats.
"""

from __future__ import annotations

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter


def main() -> None:
    """Print one row per materialized asset of the latest successful run."""
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]), limit=1)
        if not runs:
            raise SystemExit("no successful run in this Dagster instance")
        run = runs[0]
        stats = {s.step_key: s for s in instance.get_run_step_stats(run.run_id)}
        print(f"run {run.run_id[:8]}")
        print("| asset | wall s | peak GPU GiB | plan GiB | peak / plan |\n|---|---|---|---|---|")
        events = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
        for record in events:
            materialization = record.event_log_entry.asset_materialization
            key = materialization.asset_key.to_user_string()
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            step = stats.get(key.replace("/", "__"))
            wall = f"{step.end_time - step.start_time:.1f}" if step and step.end_time else "?"
            peak, plan = metadata.get("peak_gpu_memory_gib"), metadata.get("memory_plan_rank_gib")
            ratio = f"{peak / plan:.2f}" if peak and plan else ""
            print(f"| {key} | {wall} | {peak if peak is not None else ''} | {plan if plan is not None else ''} | "
                  f"{ratio} |")


if __name__ == "__main__":
    main()
