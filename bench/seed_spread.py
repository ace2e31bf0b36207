"""How far the tiny graph's headline figures move with the seed, beside the 95% CIs they are reported with.

A CI says how much a figure would move if the *prompts* were redrawn; it says nothing about the seed of PPO's
rollouts or of the evaluation's sampling. This bench materializes the upstream graph once (data, SFT, reward
model, judge, toxicity scorer, prompts), then for each seed trains `ppo_policy` with that seed and evaluates it
(`eval_responses`, `toxicity_scores` and `auto_preference`, sampling with the same seed). Result reuse is off and
checks do not block, so every seed's policy is trained and evaluated even when a gate fails.

It prints each seed's figures with their CIs and gate verdicts, then per figure the spread across seeds (min,
max, SD) beside the mean CI width, and whether every seed reached the same verdict. A verdict that flips with
the seed is not robust, whatever its CI says.

    .venv/bin/python -m bench.seed_spread [--seeds 1000 1001 1002] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from bench.common import isolated_env, run_measured
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.resources import latest_artifact

UPSTREAM = "hh_raw,preference_dataset,eval_prompts,base_model,sft_model,reward_model,judge_model,rtp_records," \
           "rtp_prompts,toxicity_model"
PER_SEED = ("ppo_policy,sft_model/eval_responses,ppo_policy/eval_responses,sft_model/toxicity_scores,"
            "ppo_policy/toxicity_scores,ppo_policy/auto_preference")


@dataclass(frozen=True)
class Figure:
    """A headline figure as an asset reports it: where it lives, which check decides on it."""

    label: str
    asset: str
    metric: str
    check: str
    has_interval: bool = True
    signed: bool = True  # a difference (shown with its sign) rather than a level or a share


FIGURES = (
    Figure("PPO − SFT reward-model score", "ppo_policy", "eval_reward_gain", "ppo_beats_sft"),
    Figure("KL(PPO ‖ SFT), nats", "ppo_policy", "eval_kl_to_sft", "kl_within_bound", has_interval=False,
           signed=False),
    Figure("judge: RLHF win rate", "ppo_policy/auto_preference", "win_rate", "rlhf_not_dispreferred", signed=False),
    Figure("judge: RLHF loss rate", "ppo_policy/auto_preference", "loss_rate", "rlhf_not_dispreferred", signed=False),
    Figure("RLHF − SFT mean toxicity", "ppo_policy/toxicity_scores", "difference_mean_toxicity", "toxicity_not_worse"),
    Figure("RLHF − SFT expected max toxicity", "ppo_policy/toxicity_scores", "difference_expected_max_toxicity",
           "toxicity_not_worse"),
    Figure("RLHF − SFT toxicity probability", "ppo_policy/toxicity_scores", "difference_toxicity_probability",
           "toxicity_not_worse"),
    Figure("RLHF replies of ≤ 2 words (share)", "ppo_policy/eval_responses", "rlhf_short_share",
           "responses_not_degenerate", has_interval=False, signed=False),
)


@dataclass(frozen=True)
class Observation:
    estimate: float
    low: float | None
    high: float | None
    passed: bool | None


def _materialize(select: str, env: dict[str, str], root: Path, run_config: dict, log: str) -> None:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
               "--select", select, "--config-json", json.dumps(run_config)]
    measured = run_measured(command, env, PROJECT_ROOT, root / log)
    if measured.returncode:
        raise SystemExit(f"{root / log}:\n" + (root / log).read_text()[-4000:])
    print(f"  {select}: {measured.seconds:.0f} s", flush=True)


def _verdicts(home: str) -> dict[str, bool | None]:
    """The latest recorded outcome of every check the figures name (None: not evaluated)."""
    keys = {f.check: AssetCheckKey(AssetKey.from_user_string(f.asset), f.check) for f in FIGURES}
    with DagsterInstance.from_config(home) as instance:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(keys.values()))
    outcome = {AssetCheckExecutionRecordStatus.SUCCEEDED: True, AssetCheckExecutionRecordStatus.FAILED: False}
    return {name: outcome.get(latest[key].status) if key in latest else None for name, key in keys.items()}


def _observe(env: dict[str, str]) -> dict[str, Observation]:
    """Every figure of the latest materializations, with its CI and its check's verdict."""
    verdicts = _verdicts(env["DAGSTER_HOME"])
    found = {}
    for figure in FIGURES:
        manifest, _ = latest_artifact(figure.asset, dagster_home=env["DAGSTER_HOME"],
                                      artifact_root=env["RLHF_ARTIFACT_ROOT"])
        m = manifest.metrics
        low, high = (m[f"{figure.metric}_ci_low"], m[f"{figure.metric}_ci_high"]) if figure.has_interval \
            else (None, None)
        found[figure.label] = Observation(m[figure.metric], low, high, verdicts[figure.check])
    return found


def _number(value: float, signed: bool) -> str:
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _cell(o: Observation, signed: bool) -> str:
    interval = f" [{_number(o.low, signed)}, {_number(o.high, signed)}]" \
        if o.low is not None and o.high is not None else ""
    verdict = {True: "pass", False: "FAIL", None: "-"}[o.passed]
    return f"{_number(o.estimate, signed)}{interval} {verdict}"


def report(seeds: list[int], runs: list[dict[str, Observation]]) -> str:
    """Per-seed figures, then each figure's spread across seeds beside its mean CI width and verdict agreement."""
    lines = ["pass / FAIL: the verdict of the check in brackets (toxicity_not_worse decides on all three toxicity",
             "figures together; rlhf_not_dispreferred on wins and losses together).", "",
             "| figure [check] | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    for figure in FIGURES:
        cells = " | ".join(_cell(run[figure.label], figure.signed) for run in runs)
        lines.append(f"| {figure.label} [{figure.check}] | {cells} |")
    lines += ["", "| figure | min | max | SD across seeds | mean CI width | check verdicts |",
              "|---|---|---|---|---|---|"]
    for figure in FIGURES:
        seen = [run[figure.label] for run in runs]
        values = [o.estimate for o in seen]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        widths = [o.high - o.low for o in seen if o.low is not None and o.high is not None]
        width = f"{statistics.mean(widths):.3f}" if widths else "no CI"
        verdicts = {o.passed for o in seen}
        agreement = "all pass" if verdicts == {True} else "all fail" if verdicts == {False} else \
            f"FLIPS ({sum(o.passed is True for o in seen)} of {len(seen)} pass)"
        lines.append(f"| {figure.label} | {_number(min(values), figure.signed)} | "
                     f"{_number(max(values), figure.signed)} | {spread:.3f} | {width} | {agreement} |")
    return "\n".join(lines)


def main() -> None:
    """Materialize upstream once, then PPO and its evaluation once per seed; print the spread table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--keep", type=Path, default=None, help="write the instance and artifacts here (kept)")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds to show a spread")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        env = {**isolated_env(root), "RLHF_REUSE_RESULTS": "0", "RLHF_BLOCKING_CHECKS": "0"}
        print("upstream (once):", flush=True)
        _materialize(UPSTREAM, env, root, {}, "upstream.log")
        runs = []
        for seed in args.seeds:
            print(f"seed {seed}:", flush=True)
            sampled = {"config": {"generation_seed": seed}}  # SFT's shared samples are drawn with the same seed
            run_config = {"ops": {"ppo_policy": {"config": {"seed": seed}}, "ppo_policy__eval_responses": sampled,
                                  "sft_model__eval_responses": sampled, "ppo_policy__toxicity_scores": sampled,
                                  "sft_model__toxicity_scores": sampled}}
            _materialize(PER_SEED, env, root, run_config, f"seed-{seed}.log")
            runs.append(_observe(env))
    print(f"\ntiny preset, PPO trained and evaluated with {len(args.seeds)} seeds (same data, SFT, RM, judge, "
          "scorer and prompts):\n")
    print(report(args.seeds, runs))


if __name__ == "__main__":
    main()
