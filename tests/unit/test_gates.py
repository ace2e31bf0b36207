"""Issues 16 (3, 4) and 26 (4): each evaluation check flips exactly at its CI bound or margin, decides on the
length-controlled estimate where one exists, and the scorer check fails for a scorer that rates "." as toxic."""

import math
from pathlib import Path

import pytest
import torch
from dagster import build_asset_check_context

from rlhf_assets.defs.evaluation.checks import input_checks, suite_checks
from rlhf_assets.defs.evaluation.suite import POLICIES
from rlhf_assets.defs.models.checks import policy_checks
from rlhf_assets.eval.agreement import sign_test
from rlhf_assets.eval.gates import p_value_text
from rlhf_assets.eval.toxicity import METRICS
from rlhf_assets.modeling.detoxify_format import ORIGINAL_CLASSES, load_detoxify, save_detoxify_checkpoint
from rlhf_assets.presets import TINY, EvalSpec, ToxicitySpec
from rlhf_assets.step_contracts.base import StepReport, StepRequest
from rlhf_assets.step_contracts.evaluation import (
    AutoPreferenceReport,
    AutoPreferenceRequest,
    EvalResponsesReport,
    EvalResponsesRequest,
    ToxicityModelReport,
    ToxicityScoresReport,
    ToxicityScoresRequest,
)
from rlhf_assets.step_contracts.models import PolicyReport
from rlhf_assets.steps.toxicity_model import score_probes
from rlhf_assets.storage import Manifest
from tests.conftest import all_checks
from tests.unit.test_detoxify_format import tiny_bert  # noqa: F401  (the fixture)

pytestmark = pytest.mark.unit

(responses_not_degenerate, suite_kl_within_bound, toxicity_not_worse, judge_gain_shown,
 rlhf_not_dispreferred) = suite_checks(POLICIES[0], prompt_sets=(), blocking=True)
ppo_beats_sft, kl_within_bound = policy_checks(blocking=True)
scorer_ignores_degenerate_text, _ = input_checks(blocking=True)


def test_every_policy_suite_has_the_same_checks_declared_on_its_keys() -> None:
    declared = {(key.asset_key.to_user_string(), key.name) for check in all_checks for key in check.check_keys}
    for policy in POLICIES:
        for asset, name in (("eval_responses", "responses_not_degenerate"), ("eval_responses", "kl_within_bound"),
                            ("toxicity_scores", "toxicity_not_worse"), ("auto_preference", "judge_gain_shown"),
                            ("auto_preference", "rlhf_not_dispreferred")):
            assert (policy.key(asset).to_user_string(), name) in declared, (policy.asset, asset)
    assert ("dpo_policy/auto_preference", "judge_gain_shown") in declared, "DPO is gated like PPO"
    assert ("dpo_policy/eval_responses", "kl_within_bound") in declared


# Each asset's report, and the request it was made from with tiny's settings: a test states only the figures it is
# about, the rest of the report is neutral (zeros).
REPORTS: dict[str, tuple[type[StepReport], StepRequest | None]] = {
    "ppo_policy": (PolicyReport, None),
    "eval_responses": (EvalResponsesReport, EvalResponsesRequest(evaluation=TINY.evaluation,
                                                                 kl_bound=TINY.ppo.kl_bound)),
    "auto_preference": (AutoPreferenceReport, AutoPreferenceRequest(evaluation=TINY.evaluation, reward=TINY.reward,
                                                                    judge=TINY.judge)),
    "toxicity_scores": (ToxicityScoresReport, ToxicityScoresRequest(toxicity=TINY.toxicity, prompt_set="rtp",
                                                                    sft_baseline="sft_model/toxicity_scores")),
    "toxicity_model": (ToxicityModelReport, None),
}


def _manifest(asset: str, *, metrics: dict[str, float] | None = None, counts: dict[str, int] | None = None,
              config: dict | None = None) -> Manifest:
    report, request = REPORTS[asset]
    kinds = report.wire_keys()
    counts = {k: 0 for k, kind in kinds.items() if kind is int} | (counts or {})
    metrics = {k: 0.0 for k, kind in kinds.items() if kind is float} | (metrics or {})
    return Manifest(asset=asset, uri=f"{asset}/0", content_hash="0" * 64, preset="tiny", metrics=metrics,
                    counts=counts, config=(request.wire() if request else {}) | (config or {}))


def _run(check, manifest: Manifest):
    return check(build_asset_check_context(), manifest)


def _interval(name: str, estimate: float, low: float, high: float) -> dict[str, float]:
    return {name: estimate, f"{name}_ci_low": low, f"{name}_ci_high": high}


@pytest.mark.parametrize(("low", "passed"), [(0.001, True), (0.0, False), (-0.001, False)])
def test_ppo_beats_sft_needs_the_whole_length_controlled_interval_above_zero(low: float, passed: bool) -> None:
    """Issue 16 (3): a positive point estimate with an interval reaching 0 used to pass. Issue 26 (1): the raw gain
    (here clearly above 0) is shown, the gain at equal length decides."""
    metrics = _interval("eval_reward_gain", 0.3, 0.2, 0.4) | _interval("eval_reward_gain_lc", 0.2, low, 0.4)
    result = _run(ppo_beats_sft, _manifest("ppo_policy", metrics=metrics, counts={"eval_prompts": 100}))
    assert result.passed is passed
    assert result.metadata["ci_low"].value == low and result.metadata["n"].value == 100
    assert result.metadata["raw_ci_low"].value == 0.2 and "at equal length" in result.description


@pytest.mark.parametrize(("high", "passed"), [(7.99, True), (8.0, False)])
def test_kl_is_held_under_its_bound_by_the_upper_bound(high: float, passed: bool) -> None:
    """Issue 26 (4): a mean KL of 5 whose interval reaches the bound is not shown to be within it."""
    ppo = _manifest("ppo_policy", metrics=_interval("eval_kl_to_sft", 5.0, 3.0, high) | {"eval_kl_bound": 8.0},
                    counts={"eval_prompts": 100})
    result = _run(kl_within_bound, ppo)
    assert result.passed is passed
    assert (result.metadata["bound"].value, result.metadata["n"].value) == (8.0, 100)
    assert "ci_high < bound" in result.metadata["rule"].value
    responses = _manifest("eval_responses", metrics=_interval("kl_to_sft", 5.0, 3.0, high) | {"kl_bound": 8.0},
                          counts={"prompts": 100})
    assert _run(suite_kl_within_bound, responses).passed is passed, "every policy is held to it"


def _toxicity(high: dict[str, float], margins: dict[str, float] | None = None,
              second_high: dict[str, float] | None = None) -> Manifest:
    """A toxicity manifest whose upper bounds at equal length are `high` by Detoxify (and by the second scorer,
    `second_high` or the same)."""
    spec = ToxicitySpec(margins=margins or {})
    metrics = {"scorer_spearman": 0.6}
    for prefix, bounds in (("", high), ("second_", second_high or high)):
        for metric in METRICS:
            metrics |= _interval(f"{prefix}difference_{metric}", -0.03, -0.05, -0.01)
            metrics |= _interval(f"{prefix}difference_{metric}_lc", 0.0, -0.05, bounds[metric])
    return _manifest("toxicity_scores", metrics=metrics, counts={"prompts": 1000},
                     config={"toxicity": spec.model_dump()})


def test_toxicity_not_worse_is_non_inferiority_at_equal_length_on_every_metric() -> None:
    """Issue 16 (3): passes only when each upper bound is below its margin; one metric over its margin fails.
    Issue 26 (1): the bounds at equal length decide, though the raw differences are all below 0."""
    inside = {"mean_toxicity": 0.0099, "expected_max_toxicity": 0.0199, "toxicity_probability": 0.0299}
    result = _run(toxicity_not_worse, _toxicity(inside))
    assert result.passed, result.description
    assert result.metadata["mean_toxicity_margin"].value == 0.01 and result.metadata["n"].value == 1000
    assert result.metadata["mean_toxicity_raw_ci_high"].value == -0.01
    for metric in METRICS:
        over = {**inside, metric: getattr(ToxicitySpec().margins, metric)}
        assert not _run(toxicity_not_worse, _toxicity(over)).passed, metric
    wide = {"mean_toxicity": 0.015, "expected_max_toxicity": 0.0, "toxicity_probability": 0.0}
    assert not _run(toxicity_not_worse, _toxicity(wide)).passed, "few prompts: a wide interval cannot pass"
    assert _run(toxicity_not_worse, _toxicity(wide, {"mean_toxicity": 0.02})).passed, "the margin is config"


def test_toxicity_is_inconclusive_when_the_two_scorers_disagree() -> None:
    """Issue 26 (3): a verdict one scorer family gives and the other does not is no verdict."""
    inside = {"mean_toxicity": 0.005, "expected_max_toxicity": 0.01, "toxicity_probability": 0.02}
    outside = {**inside, "mean_toxicity": 0.02}
    agree = _run(toxicity_not_worse, _toxicity(inside))
    assert agree.passed and agree.metadata["verdict"].value == "not worse"
    for detoxify, second in ((inside, outside), (outside, inside)):
        result = _run(toxicity_not_worse, _toxicity(detoxify, second_high=second))
        assert not result.passed and result.severity.value == "WARN"
        assert result.description.startswith("inconclusive") and result.metadata["verdict"].value == "inconclusive"
        assert result.metadata["scorer_spearman"].value == 0.6
    both = _run(toxicity_not_worse, _toxicity(outside))
    assert not both.passed and both.severity.value == "ERROR" and both.metadata["verdict"].value == "not shown"


def test_the_deciding_bound_is_printed_to_the_digit_that_decides() -> None:
    """Issue 26 (4, 7): a +0.0299 bound against a 0.03 margin must not print as +0.03."""
    result = _run(toxicity_not_worse, _toxicity({"mean_toxicity": 0.0099, "expected_max_toxicity": 0.0199,
                                                 "toxicity_probability": 0.0299}))
    assert "+0.0299]" in result.description and "+0.030]" not in result.description


def _preference(wins: int, losses: int, win_rate_lc: tuple[float, float, float]) -> Manifest:
    metrics = _interval("judge_win_rate_lc", *win_rate_lc) | _interval("win_rate_raw", 0.5, 0.4, 0.6)
    metrics |= _interval("judge_gain_lc", 0.1, 0.05, 0.2) | _interval("judge_gain_raw", 0.1, 0.0, 0.2)
    return _manifest("auto_preference", counts={"wins": wins, "ties": 100 - wins - losses, "losses": losses},
                     metrics=metrics, config={"evaluation": EvalSpec().model_dump()})


@pytest.mark.parametrize(("low", "passed"), [(0.451, True), (0.44, False), (0.3, False)])
def test_rlhf_not_dispreferred_is_non_inferiority_on_the_length_controlled_loss_minus_win(low: float,
                                                                                          passed: bool) -> None:
    """Issue 26 (4): the upper bound of loss − win (1 − 2 × the win-rate's lower bound) must be below the margin;
    "SFT not significantly better" used to pass whatever the data could not tell."""
    result = _run(rlhf_not_dispreferred, _preference(20, 20, (0.5, low, 0.6)))
    assert result.passed is passed
    assert result.metadata["margin"].value == EvalSpec().dispreference_margin
    assert result.metadata["ci_high"].value == pytest.approx(1 - 2 * low)
    assert result.metadata["sign_test_p"].value == "1"


def test_p_values_show_two_significant_figures() -> None:
    assert p_value_text(sign_test(30, 5)) == "2.2e-05" and p_value_text(sign_test(0, 40)) == "1.8e-12"
    result = _run(rlhf_not_dispreferred, _preference(12, 25, (0.4, 0.35, 0.45)))
    assert result.metadata["sign_test_p"].value == f"{sign_test(12, 25):.2g}" and "p = 0.047" in result.description


def test_every_policy_is_gated_on_the_judges_gain_at_equal_length() -> None:
    manifest = _preference(40, 10, (0.6, 0.55, 0.65))
    assert _run(judge_gain_shown, manifest).passed
    manifest.metrics |= _interval("judge_gain_lc", 0.1, -0.01, 0.2)
    result = _run(judge_gain_shown, manifest)
    assert not result.passed and result.metadata["raw_ci_low"].value == 0.0


def _responses(n: int = 100, **rlhf: float) -> dict[str, float]:
    healthy = {"empty_share": 0.0, "duplicate_share": 0.0, "short_share": 0.03, "mean_words": 12.0,
               "mean_words_ci_low": 10.0, "mean_words_ci_high": 14.0}
    return {**{f"sft_{k}": v for k, v in healthy.items()}, **{f"rlhf_{k}": v for k, v in {**healthy, **rlhf}.items()}}


def test_short_and_wordless_replies_fail_the_degeneracy_check_by_their_wilson_bounds() -> None:
    """Issue 16 (4): 19 of 100 replies of ≤ 2 words, or punctuation counted as words, used to read "healthy".
    Issue 26 (4): each share is held under its maximum by its Wilson upper bound, the mean length by its lower."""
    config, counts = {"evaluation": EvalSpec().model_dump()}, {"prompts": 100}

    def run(**rlhf: float):
        return _run(responses_not_degenerate, _manifest("eval_responses", metrics=_responses(**rlhf), config=config,
                                                         counts=counts))

    assert run().passed, run().description
    short = run(short_share=0.05)
    assert not short.passed and "rlhf: ≤ 2 words: 5 of 100" in short.description, "5% is not shown to be under 10%"
    assert short.metadata["rlhf_short_share_ci_high"].value > 0.1
    assert not run(empty_share=0.02).passed, "2 wordless of 100: the upper bound passes 5%"
    assert not run(mean_words_ci_low=4.9).passed
    tiny = {"evaluation": TINY.evaluation.model_dump()}
    assert _run(responses_not_degenerate, _manifest("eval_responses", metrics=_responses(short_share=0.19),
                                                    config=tiny, counts=counts)).passed, "tiny's stated bound is 30%"


def test_the_scorer_check_fails_for_a_scorer_that_rates_a_full_stop_as_toxic(tiny_bert, tmp_path: Path) -> None:  # noqa: F811
    """A Detoxify checkpoint whose every score is 0.57 (what the old stand-in gave "."), loaded by Detoxify."""
    model, tokenizer = tiny_bert
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(math.log(0.57 / 0.43))
    save_detoxify_checkpoint(tmp_path, model, tokenizer, ORIGINAL_CLASSES)
    probes = score_probes(load_detoxify(tmp_path), batch_size=8, scorer_kind="checkpoint")
    assert probes.loc[probes["text"] == ".", "detoxify_toxicity"].item() == pytest.approx(0.57, abs=1e-3)
    scorer = _manifest("toxicity_model", metrics={"degenerate_probe_max": float(probes["detoxify_toxicity"].max()),
                                                  "degenerate_probe_mean": float(probes["detoxify_toxicity"].mean())})
    result = _run(scorer_ignores_degenerate_text, scorer)
    assert not result.passed and "0.570 (max 0.1)" in result.description
    calm = _manifest("toxicity_model", metrics={"degenerate_probe_max": 0.02, "degenerate_probe_mean": 0.01})
    assert _run(scorer_ignores_degenerate_text, calm).passed
