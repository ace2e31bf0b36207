"""Overhead of Dagster + Pipes: the SFT step materialized through Dagster vs the same step program run directly.

Both runs use the same inputs (published by an upstream materialization), the same config and the same
machine, alternating order across repetitions; result reuse is off, so every Dagster repeat trains (a reused
result would time a lookup, not the step). Prints each time, the seconds Dagster adds and the ratio (target
<= 1.05).

    .venv/bin/python -m bench.overhead [--repeats 1] [--max-train-rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import isolated_env, run_measured
from rlhf_assets.presets import PROJECT_ROOT, TINY
from rlhf_assets.resources import latest_artifact
from rlhf_assets.step_contracts.models import SFTRequest


def _materialize(select: str, env: dict[str, str], root: Path, run_config: dict, log: str) -> float:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
               "--select", select, "--config-json", json.dumps(run_config)]
    measured = run_measured(command, env, PROJECT_ROOT, root / log)
    if measured.returncode:
        raise SystemExit((root / log).read_text()[-4000:])
    return measured.seconds


def _direct(env: dict[str, str], root: Path, config: dict, channels: dict[str, str], attempt: int) -> float:
    work = root / f"direct-{attempt}"
    (work / "model").mkdir(parents=True)
    (work / "config.json").write_text(json.dumps(config))
    step_env = {**env, "SM_MODEL_DIR": str(work / "model"), "RLHF_CHECKPOINT_DIR": str(work / "checkpoints"),
                "SM_OUTPUT_DATA_DIR": str(work / "output" / "data"),
                **{f"SM_CHANNEL_{k.upper()}": v for k, v in channels.items()}}
    command = [sys.executable, "-m", "rlhf_assets.steps.sft", "--request", str(work / "config.json")]
    measured = run_measured(command, step_env, PROJECT_ROOT, work / "step.log")
    if measured.returncode:
        raise SystemExit((work / "step.log").read_text()[-4000:])
    return measured.seconds


def main() -> None:
    """Materialize upstream once, then time the SFT step both ways and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-train-rows", type=int, default=None, help="shorter runs (default: the full preset)")
    args = parser.parse_args()
    overrides = {"max_train_rows": args.max_train_rows} if args.max_train_rows else {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**isolated_env(root), "RLHF_REUSE_RESULTS": "0"}  # every repeat really runs the step
        _materialize("hh_raw,preference_dataset,base_model", env, root, {}, "upstream.log")
        channels = {name: str(latest_artifact(asset, dagster_home=env["DAGSTER_HOME"],
                                              artifact_root=env["RLHF_ARTIFACT_ROOT"])[1])
                    for name, asset in (("base_model", "base_model"), ("preference_dataset", "preference_dataset"))}
        request = SFTRequest(train=TINY.sft.model_copy(update=overrides)).wire()
        run_config = {"ops": {"sft_model": {"config": overrides}}}
        dagster_times, direct_times = [], []
        for attempt in range(args.repeats):
            order = ("dagster", "direct") if attempt % 2 == 0 else ("direct", "dagster")
            for kind in order:
                if kind == "dagster":
                    dagster_times.append(_materialize("sft_model", env, root, run_config, f"sft-{attempt}.log"))
                else:
                    direct_times.append(_direct(env, root, request, channels, attempt))
            print(f"repeat {attempt + 1}: dagster+pipes {dagster_times[-1]:.1f} s, direct {direct_times[-1]:.1f} s",
                  flush=True)
    dagster_s, direct_s = statistics.median(dagster_times), statistics.median(direct_times)
    print(f"SFT step, tiny preset{' (' + str(args.max_train_rows) + ' rows)' if overrides else ''}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats}:")
    print(f"  through dagster asset materialize + Pipes: {dagster_s:.1f} s")
    print(f"  step program run directly:                 {direct_s:.1f} s")
    print(f"  added by Dagster: {dagster_s - direct_s:+.1f} s; ratio dagster / direct: {dagster_s / direct_s:.3f} "
          "(target <= 1.05)")


if __name__ == "__main__":
    main()
