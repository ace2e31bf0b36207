"""Checks of the evaluation domain: every policy's suite, the toxicity scorer and the RTP prompts.

For every policy's evaluation suite (declared by asset key, the same rules for PPO, DPO, ...) its eval responses
must not be wordless, repeated or too short (Wilson and bootstrap bounds), its KL to SFT must stay under the
bound, the independent judge must show a gain at equal length and not prefer SFT by more than a margin
(non-inferiority), and it must be shown no more toxic than SFT within a margin by two scorers of different
families (inconclusive when they disagree). The rules live in `eval/gates.py`, applied to the steps' reports by
`eval/suite_gates.py` (which `policy_comparison` shares).
"""

from collections.abc import Sequence

from dagster import AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, AssetKey, asset_check

from rlhf_assets.defs.common import gate_result
from rlhf_assets.defs.data.checks import rows_clean_check
from rlhf_assets.defs.evaluation.suite import EvaluatedPolicy, toxicity_keys
from rlhf_assets.eval.degenerate_text import DEGENERATE_PROBES, MAX_PROBE_SCORE
from rlhf_assets.eval.suite_gates import (
    degeneracy_gate,
    dispreference_gate,
    judge_gain_gate,
    kl_gate,
    toxicity_gate,
)
from rlhf_assets.layouts import PROMPTS
from rlhf_assets.step_contracts.evaluation import ToxicityModelReport, ToxicityScoresReport
from rlhf_assets.storage import Manifest


def suite_checks(policy: EvaluatedPolicy, prompt_sets: Sequence[str],
                 blocking: bool) -> list[AssetChecksDefinition]:
    """The checks of one policy's evaluation suite, declared on its assets' keys (same rules for every policy)."""

    @asset_check(asset=policy.key("eval_responses"), name="responses_not_degenerate", blocking=blocking,
                 description="Responses not wordless, repeated or too short (per-preset bounds, by 95% bounds)")
    def responses_not_degenerate(eval_responses: Manifest) -> AssetCheckResult:
        """A collapsed policy (empty, punctuation, identical or one-word answers) makes every comparison meaningless."""
        return gate_result(degeneracy_gate(eval_responses))

    @asset_check(asset=policy.key("eval_responses"), name="kl_within_bound",
                 description="The policy's KL to SFT on its eval responses: 95% upper bound under the preset's bound")
    def kl_within_bound(eval_responses: Manifest) -> AssetCheckResult:
        """Every policy is held to the same KL bound as PPO: one that drifted far from SFT wins by other means."""
        return gate_result(kl_gate(eval_responses))

    @asset_check(asset=policy.key("auto_preference"), name="judge_gain_shown",
                 description="The independent judge's score gain over SFT at equal length: whole 95% CI above 0")
    def judge_gain_shown(auto_preference: Manifest) -> AssetCheckResult:
        """The gain of every policy by a model it was not optimised against (PPO's RM gain is its own target)."""
        return gate_result(judge_gain_gate(auto_preference))

    @asset_check(asset=policy.key("auto_preference"), name="rlhf_not_dispreferred",
                 description="The judge's loss − win rate at equal length: non-inferiority within a margin")
    def rlhf_not_dispreferred(auto_preference: Manifest) -> AssetCheckResult:
        """Losses outnumbering wins by more than the margin is the automatic judge's regression signal between human
        evaluations; "not significantly worse" would pass with too few prompts to tell, so the data must show it."""
        return gate_result(dispreference_gate(auto_preference))

    toxicity = [toxicity_not_worse(key) for key in toxicity_keys(policy, prompt_sets).values()]
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


def input_checks(blocking: bool) -> list[AssetChecksDefinition]:
    """The toxicity scorer's degenerate-text check and the RTP prompts' row check."""

    @asset_check(asset="toxicity_model", blocking=blocking,
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

    return [scorer_ignores_degenerate_text, rows_clean_check("rtp_prompts", (PROMPTS,), ("prompt_text",), blocking)]
