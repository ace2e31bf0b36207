"""Asset checks: the regressions an RLHF run must not hide, visible in the UI beside each asset.

PPO must beat SFT on the reward model (the whole CI of the gain above zero) and stay within the preset's KL
bound; for every policy's evaluation suite (declared by asset key, the same rules for PPO, DPO, ...) its eval
responses must not be wordless, repeated or too short, it must be shown no more toxic than SFT within a margin
(non-inferiority), and the automatic judge must not prefer SFT significantly; datasets must have no empty or
duplicate rows. The rules live in `eval/gates.py`. Checks on assets with downstream work are
blocking unless `RLHF_BLOCKING_CHECKS=0`: a failed check then stops the run before the downstream assets (e.g.
no evaluation of a policy whose gain over SFT is not shown).
"""

import os

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from rlhf_assets.assets.policy_evaluation import POLICIES, EvaluatedPolicy, toxicity_keys
from rlhf_assets.eval.degenerate_text import DEGENERATE_PROBES, MAX_PROBE_SCORE
from rlhf_assets.eval.gates import GateResult, non_inferiority, not_dispreferred, superiority
from rlhf_assets.eval.toxicity import METRICS
from rlhf_assets.layouts import EVAL_PROMPTS, PREFERENCE_SPLITS, PROMPTS, Table
from rlhf_assets.presets import EvalSpec, ToxicitySpec
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.storage import Manifest

BLOCKING = os.environ.get("RLHF_BLOCKING_CHECKS", "1") != "0"


def _result(gate: GateResult) -> AssetCheckResult:
    return AssetCheckResult(passed=gate.passed, description=gate.description, metadata=gate.metadata)


@asset_check(asset="ppo_policy", blocking=BLOCKING,
             description="PPO's RM-score gain over SFT on the eval prompts: whole 95% CI above 0")
def ppo_beats_sft(ppo_policy: Manifest) -> AssetCheckResult:
    """The whole point of PPO; a policy whose gain is not demonstrated should not be promoted or evaluated."""
    m = ppo_policy.metrics
    return _result(superiority("reward gain", m["eval_reward_gain"], m["eval_reward_gain_ci_low"],
                               m["eval_reward_gain_ci_high"], ppo_policy.counts["eval_prompts"]))


@asset_check(asset="ppo_policy", blocking=BLOCKING, description="KL(PPO ‖ SFT) on the eval prompts under the bound")
def kl_within_bound(ppo_policy: Manifest) -> AssetCheckResult:
    """A KL far above the bound means the policy drifted from SFT: reward hacking rather than alignment."""
    kl, bound = ppo_policy.metrics["eval_kl_to_sft"], ppo_policy.metrics["eval_kl_bound"]
    return AssetCheckResult(passed=kl < bound, description=f"KL {kl:.2f} vs bound {bound}",
                            metadata={"kl": round(kl, 3), "bound": bound})


@asset_check(asset="toxicity_model", blocking=BLOCKING,
             description=f"The scorer rates text without words (\".\", \"\", digits) at most {MAX_PROBE_SCORE}")
def scorer_ignores_degenerate_text(toxicity_model: Manifest) -> AssetCheckResult:
    """A scorer that calls a lone "." toxic measures how often a model says nothing, not its toxicity."""
    worst = toxicity_model.metrics["degenerate_probe_max"]
    by_rule = toxicity_model.counts.get("degenerate_probes_by_rule", 0)
    rule = f"; {by_rule} wordless probes scored 0 by the stand-in's rule" if by_rule else ""
    return AssetCheckResult(
        passed=worst <= MAX_PROBE_SCORE,
        description=f"highest score on {len(DEGENERATE_PROBES)} degenerate probes: {worst:.3f} "
                    f"(max {MAX_PROBE_SCORE}){rule}; see the asset's degenerate_probes table",
        metadata={"probe_max": round(worst, 3), "probe_mean": round(toxicity_model.metrics["degenerate_probe_mean"], 3),
                  "max_allowed": MAX_PROBE_SCORE, "probes": len(DEGENERATE_PROBES), "probes_scored_by_rule": by_rule})


def suite_checks(policy: EvaluatedPolicy) -> list[AssetChecksDefinition]:
    """The checks of one policy's evaluation suite, declared on its assets' keys (same rules for every policy)."""

    @asset_check(asset=policy.key("eval_responses"), name="responses_not_degenerate", blocking=BLOCKING,
                 description="Responses not wordless, repeated or too short (per-preset bounds)")
    def responses_not_degenerate(eval_responses: Manifest) -> AssetCheckResult:
        """A collapsed policy (empty, punctuation, identical or one-word answers) makes every comparison meaningless."""
        spec = EvalSpec.model_validate(eval_responses.config["evaluation"])
        m, problems = eval_responses.metrics, []
        bounds = (("empty_share", "without words", spec.max_empty_share),
                  ("duplicate_share", "duplicates", spec.max_duplicate_share),
                  ("short_share", "≤ 2 words", spec.max_short_share))
        for model in ("sft", "rlhf"):
            for key, label, bound in bounds:
                if m[f"{model}_{key}"] > bound:
                    problems.append(f"{model}: {m[f'{model}_{key}']:.0%} {label} (max {bound:.0%})")
            if m[f"{model}_mean_words"] < spec.min_mean_words:
                problems.append(f"{model}: mean {m[f'{model}_mean_words']:.1f} words (min {spec.min_mean_words})")
        metadata = {k: round(v, 3) for k, v in m.items() if k.endswith(("_share", "_words"))}
        metadata |= {f"max_{key}": bound for key, _, bound in bounds} | {"min_mean_words": spec.min_mean_words}
        return AssetCheckResult(passed=not problems, description="; ".join(problems) or "responses within every bound",
                                metadata=metadata)

    @asset_check(asset=policy.key("auto_preference"), name="rlhf_not_dispreferred",
                 description="The independent judge does not prefer SFT significantly (sign test)")
    def rlhf_not_dispreferred(auto_preference: Manifest) -> AssetCheckResult:
        """Losses significantly outnumbering wins: the automatic judge's regression signal between human evaluations."""
        c, judge = auto_preference.counts, auto_preference.config["evaluation"]["judge"] or "judge_model"
        return _result(not_dispreferred(c["wins"], c["ties"], c["losses"], judge))

    toxicity = [toxicity_not_worse(key) for key in toxicity_keys(policy).values()]
    return [responses_not_degenerate, *toxicity, rlhf_not_dispreferred]


def toxicity_not_worse(key: AssetKey) -> AssetChecksDefinition:
    """The non-inferiority check of one toxicity evaluation (RealToxicityPrompts or a declared prompt set)."""

    @asset_check(asset=key, name="toxicity_not_worse",
                 description="RLHF not more toxic than SFT by a margin: non-inferiority on three Gehman metrics")
    def check(toxicity_scores: Manifest) -> AssetCheckResult:
        """RLHF should not make the model more toxic. "Not significantly worse" passes by default with few prompts;
        non-inferiority asks the data to show the difference is below a margin, on each metric."""
        m, margins = toxicity_scores.metrics, ToxicitySpec.model_validate(toxicity_scores.config["toxicity"]).margins
        gates = {metric: non_inferiority(metric.replace("_", " "), m[f"difference_{metric}"],
                                         m[f"difference_{metric}_ci_low"], m[f"difference_{metric}_ci_high"],
                                         getattr(margins, metric), toxicity_scores.counts["prompts"])
                 for metric in METRICS}
        metadata: dict[str, object] = {f"{metric}_{k}": v for metric, gate in gates.items()
                                       for k, v in gate.metadata.items() if k not in ("rule", "n")}
        metadata |= {"n": toxicity_scores.counts["prompts"], "rule": next(iter(gates.values())).metadata["rule"]}
        return AssetCheckResult(passed=all(g.passed for g in gates.values()), severity=AssetCheckSeverity.ERROR,
                                description="RLHF − SFT: " + "; ".join(g.description for g in gates.values()),
                                metadata=metadata)

    return check


def _clean_rows_check(name: str, tables: tuple[Table, ...], columns: tuple[str, ...]) -> AssetChecksDefinition:
    """A check that a dataset's files have no row with an empty text column and no duplicate row."""

    @asset_check(asset=name, name=f"{name}_rows_clean", blocking=BLOCKING,
                 description=f"No empty {', '.join(columns)} and no duplicate rows")
    def check(dataset: Manifest, artifacts: ArtifactStoreResource) -> AssetCheckResult:
        directory = artifacts.store().local_path(dataset.uri)
        present = [table for table in tables if table.file in dataset.files]  # the judge split when configured
        frame = pd.concat([table.read(directory) for table in present], ignore_index=True)
        empty = int(frame[list(columns)].apply(lambda c: c.astype(str).str.strip() == "").any(axis=1).sum())
        duplicates = int(frame.duplicated(list(columns)).sum())
        return AssetCheckResult(passed=empty == 0 and duplicates == 0,
                                description=f"{empty} rows with an empty field, {duplicates} duplicate rows "
                                            f"of {len(frame)}",
                                metadata={"rows": len(frame), "empty_rows": empty, "duplicate_rows": duplicates,
                                          "files": MetadataValue.text(", ".join(table.file for table in present))})

    return check


preference_rows_clean = _clean_rows_check(
    "preference_dataset", tuple(PREFERENCE_SPLITS.values()), ("prompt", "chosen", "rejected"))
eval_prompts_rows_clean = _clean_rows_check("eval_prompts", (EVAL_PROMPTS,), ("prompt",))
rtp_prompts_rows_clean = _clean_rows_check("rtp_prompts", (PROMPTS,), ("prompt_text",))

all_checks = [ppo_beats_sft, kl_within_bound, scorer_ignores_degenerate_text,
              *(check for policy in POLICIES for check in suite_checks(policy)),
              preference_rows_clean, eval_prompts_rows_clean, rtp_prompts_rows_clean]
