"""Asset checks: the regressions an RLHF run must not hide, visible in the UI beside each asset.

PPO must beat SFT on the reward model at equal length (the whole CI of the gain above zero) and stay within the
preset's KL bound (its upper bound); for every policy's evaluation suite (declared by asset key, the same rules for
PPO, DPO, ...) its eval responses must not be wordless, repeated or too short (Wilson and bootstrap bounds), its KL
to SFT must stay under the bound, the independent judge must show a gain at equal length and not prefer SFT by
more than a margin (non-inferiority), and it must be shown no more toxic than SFT within a margin by two scorers
of different families (inconclusive when they disagree); datasets must have no empty or duplicate rows. The rules
live in `eval/gates.py`, applied to manifests in `eval/suite_gates.py` (which `policy_comparison` shares). Checks
on assets with downstream work are blocking unless `RLHF_BLOCKING_CHECKS=0`: a failed check then stops the run
before the downstream assets (e.g. no evaluation of a policy whose gain over SFT is not shown).
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

from rlhf_assets.assets.policy_evaluation import EvaluatedPolicy, toxicity_keys
from rlhf_assets.eval.degenerate_text import DEGENERATE_PROBES, MAX_PROBE_SCORE
from rlhf_assets.eval.gates import GateResult
from rlhf_assets.eval.suite_gates import (
    degeneracy_gate,
    dispreference_gate,
    judge_gain_gate,
    kl_gate,
    ppo_kl_gate,
    reward_gain_gate,
    toxicity_gate,
)
from rlhf_assets.layouts import EVAL_PROMPTS, PREFERENCE_SPLITS, PROMPTS, Table
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.step_contracts.evaluation import ToxicityModelReport, ToxicityScoresReport
from rlhf_assets.storage import Manifest

BLOCKING = os.environ.get("RLHF_BLOCKING_CHECKS", "1") != "0"


def _result(gate: GateResult) -> AssetCheckResult:
    return AssetCheckResult(passed=gate.passed, description=gate.description, metadata=gate.metadata)


@asset_check(asset="ppo_policy", blocking=BLOCKING,
             description="PPO's RM-score gain over SFT on the eval prompts at equal length: whole 95% CI above 0")
def ppo_beats_sft(ppo_policy: Manifest) -> AssetCheckResult:
    """The whole point of PPO; a policy whose gain is not demonstrated should not be promoted or evaluated. Decided
    at equal length: a gain the reward model gives only for longer (or shorter) replies is not one."""
    return _result(reward_gain_gate(ppo_policy))


@asset_check(asset="ppo_policy", blocking=BLOCKING,
             description="KL(PPO ‖ SFT) on the eval prompts: 95% bootstrap upper bound under the preset's bound")
def kl_within_bound(ppo_policy: Manifest) -> AssetCheckResult:
    """A KL far above the bound means the policy drifted from SFT: reward hacking rather than alignment."""
    return _result(ppo_kl_gate(ppo_policy))


@asset_check(asset="toxicity_model", blocking=BLOCKING,
             description=f"The scorer rates text without words (\".\", \"\", digits) at most {MAX_PROBE_SCORE}")
def scorer_ignores_degenerate_text(toxicity_model: Manifest) -> AssetCheckResult:
    """A scorer that calls a lone "." toxic measures how often a model says nothing, not its toxicity. The probes
    are a fixed, exhaustive set, not a sample: the scorer is deterministic, so the maximum over them is exact and
    has no sampling interval to decide on."""
    report = ToxicityModelReport.of(toxicity_model)
    worst, by_rule = report.degenerate_probe_max, report.degenerate_probes_by_rule
    rule = f"; {by_rule} wordless probes scored 0 by the stand-in's rule" if by_rule else ""
    return AssetCheckResult(
        passed=worst <= MAX_PROBE_SCORE,
        description=f"highest score on {len(DEGENERATE_PROBES)} degenerate probes: {worst:.3f} "
                    f"(max {MAX_PROBE_SCORE}){rule}; see the asset's degenerate_probes table",
        metadata={"estimate": round(worst, 4), "probe_mean": round(report.degenerate_probe_mean, 4),
                  "bound": MAX_PROBE_SCORE, "n": len(DEGENERATE_PROBES), "probes_scored_by_rule": by_rule,
                  "rule": "pass when the highest score over the fixed probe set ≤ the bound (exact: every probe "
                          "scored, deterministic scorer)"})


def suite_checks(policy: EvaluatedPolicy) -> list[AssetChecksDefinition]:
    """The checks of one policy's evaluation suite, declared on its assets' keys (same rules for every policy)."""

    @asset_check(asset=policy.key("eval_responses"), name="responses_not_degenerate", blocking=BLOCKING,
                 description="Responses not wordless, repeated or too short (per-preset bounds, by 95% bounds)")
    def responses_not_degenerate(eval_responses: Manifest) -> AssetCheckResult:
        """A collapsed policy (empty, punctuation, identical or one-word answers) makes every comparison meaningless."""
        return _result(degeneracy_gate(eval_responses))

    @asset_check(asset=policy.key("eval_responses"), name="kl_within_bound",
                 description="The policy's KL to SFT on its eval responses: 95% upper bound under the preset's bound")
    def kl_within_bound(eval_responses: Manifest) -> AssetCheckResult:
        """Every policy is held to the same KL bound as PPO: one that drifted far from SFT wins by other means."""
        return _result(kl_gate(eval_responses))

    @asset_check(asset=policy.key("auto_preference"), name="judge_gain_shown",
                 description="The independent judge's score gain over SFT at equal length: whole 95% CI above 0")
    def judge_gain_shown(auto_preference: Manifest) -> AssetCheckResult:
        """The gain of every policy by a model it was not optimised against (PPO's RM gain is its own target)."""
        return _result(judge_gain_gate(auto_preference))

    @asset_check(asset=policy.key("auto_preference"), name="rlhf_not_dispreferred",
                 description="The judge's loss − win rate at equal length: non-inferiority within a margin")
    def rlhf_not_dispreferred(auto_preference: Manifest) -> AssetCheckResult:
        """Losses outnumbering wins by more than the margin is the automatic judge's regression signal between human
        evaluations; "not significantly worse" would pass with too few prompts to tell, so the data must show it."""
        return _result(dispreference_gate(auto_preference))

    toxicity = [toxicity_not_worse(key) for key in toxicity_keys(policy).values()]
    return [responses_not_degenerate, kl_within_bound, *toxicity, judge_gain_shown, rlhf_not_dispreferred]


def toxicity_not_worse(key: AssetKey) -> AssetChecksDefinition:
    """The non-inferiority check of one toxicity evaluation (RealToxicityPrompts or a declared prompt set)."""

    @asset_check(asset=key, name="toxicity_not_worse",
                 description="RLHF not more toxic than SFT by a margin at equal length, by Detoxify and a second "
                             "scorer: non-inferiority on three Gehman metrics; inconclusive when the scorers disagree")
    def check(toxicity_scores: Manifest) -> AssetCheckResult:
        """RLHF should not make the model more toxic. "Not significantly worse" passes by default with few prompts;
        non-inferiority asks the data to show the difference is below a margin, on each metric. A second scorer of
        another family must agree, or the verdict is inconclusive."""
        verdict = toxicity_gate(toxicity_scores)
        spearman = ToxicityScoresReport.of(toxicity_scores).scorer_spearman
        metadata = verdict.detoxify.metadata | verdict.second.metadata | {
            "scorer_spearman": round(spearman, 3), "verdict": verdict.verdict}
        if verdict.inconclusive:
            names = ("Detoxify", "the second scorer")
            shown, not_shown = names if verdict.detoxify.passed else names[::-1]
            return AssetCheckResult(
                passed=False, severity=AssetCheckSeverity.WARN, metadata=metadata,
                description=f"inconclusive: {shown} shows RLHF not worse, {not_shown} does not (Spearman "
                            f"{spearman:.2f}). Detoxify: {verdict.detoxify.description}. Second scorer: "
                            f"{verdict.second.description}")
        return AssetCheckResult(passed=verdict.passed, severity=AssetCheckSeverity.ERROR, metadata=metadata,
                                description=f"both scorers agree. RLHF − SFT by Detoxify: "
                                            f"{verdict.detoxify.description}")

    return check


def _clean_rows_check(name: str, tables: tuple[Table, ...], columns: tuple[str, ...]) -> AssetChecksDefinition:
    """A check that a dataset's files have no row with an empty text column and no duplicate row."""

    @asset_check(asset=name, name=f"{name}_rows_clean", blocking=BLOCKING,
                 description=f"No empty {', '.join(columns)} and no duplicate rows")
    def check(dataset: Manifest, artifacts: ArtifactStoreResource) -> AssetCheckResult:
        directory = artifacts.store().verified_path(dataset)
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

# The checks of the shared graph; each policy's suite checks come with its suite (`policy_suites.py`).
shared_checks = [ppo_beats_sft, kl_within_bound, scorer_ignores_degenerate_text,
                 preference_rows_clean, eval_prompts_rows_clean, rtp_prompts_rows_clean]
