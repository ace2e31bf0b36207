"""Issue 16 (3, 4): each evaluation check flips exactly at its CI bound, margin or test, and the scorer check fails
for a scorer that rates "." as toxic."""

import math
from pathlib import Path

import pytest
import torch
from dagster import build_asset_check_context

from rlhf_assets.assets.policy_evaluation import POLICIES
from rlhf_assets.checks import all_checks, ppo_beats_sft, scorer_ignores_degenerate_text, suite_checks
from rlhf_assets.eval.agreement import sign_test
from rlhf_assets.eval.toxicity import METRICS
from rlhf_assets.modeling.detoxify_format import ORIGINAL_CLASSES, load_detoxify, save_detoxify_checkpoint
from rlhf_assets.presets import TINY, EvalSpec, ToxicitySpec
from rlhf_assets.steps.toxicity_model import score_probes
from rlhf_assets.storage import Manifest
from tests.unit.test_detoxify_format import tiny_bert  # noqa: F401  (the fixture)

pytestmark = pytest.mark.unit

responses_not_degenerate, toxicity_not_worse, *prompt_set_toxicity, rlhf_not_dispreferred = suite_checks(POLICIES[0])


def test_every_policy_suite_has_the_same_checks_declared_on_its_keys() -> None:
    declared = {(key.asset_key.to_user_string(), key.name) for check in all_checks for key in check.check_keys}
    for policy in POLICIES:
        for asset, name in (("eval_responses", "responses_not_degenerate"), ("toxicity_scores", "toxicity_not_worse"),
                            ("auto_preference", "rlhf_not_dispreferred")):
            assert (policy.key(asset).to_user_string(), name) in declared, (policy.asset, asset)
    assert ("dpo_policy/eval_responses", "responses_not_degenerate") in declared


def _manifest(asset: str, *, metrics: dict[str, float] | None = None, counts: dict[str, int] | None = None,
              config: dict | None = None) -> Manifest:
    return Manifest(asset=asset, uri=f"{asset}/0", content_hash="0" * 64, preset="tiny", metrics=metrics or {},
                    counts=counts or {}, config=config or {})


def _run(check, manifest: Manifest):
    return check(build_asset_check_context(), manifest)


@pytest.mark.parametrize(("low", "passed"), [(0.001, True), (0.0, False), (-0.001, False)])
def test_ppo_beats_sft_needs_the_whole_interval_above_zero(low: float, passed: bool) -> None:
    """Issue 16 (3): a positive point estimate with an interval reaching 0 used to pass."""
    ppo = _manifest("ppo_policy", metrics={"eval_reward_gain": 0.2, "eval_reward_gain_ci_low": low,
                                           "eval_reward_gain_ci_high": 0.4}, counts={"eval_prompts": 100})
    result = _run(ppo_beats_sft, ppo)
    assert result.passed is passed
    assert result.metadata["ci_low"].value == low and result.metadata["n"].value == 100


def _toxicity(high: dict[str, float], margins: dict[str, float] | None = None) -> Manifest:
    spec = ToxicitySpec(margins=margins or {})
    metrics = {}
    for metric in METRICS:
        metrics |= {f"difference_{metric}": 0.0, f"difference_{metric}_ci_low": -0.05,
                    f"difference_{metric}_ci_high": high[metric]}
    return _manifest("toxicity_scores", metrics=metrics, counts={"prompts": 1000},
                     config={"toxicity": spec.model_dump()})


def test_toxicity_not_worse_is_non_inferiority_on_every_metric() -> None:
    """Issue 16 (3): passes only when each upper bound is below its margin; one metric over its margin fails."""
    inside = {"mean_toxicity": 0.0099, "expected_max_toxicity": 0.0199, "toxicity_probability": 0.0299}
    result = _run(toxicity_not_worse, _toxicity(inside))
    assert result.passed, result.description
    assert result.metadata["mean_toxicity_margin"].value == 0.01 and result.metadata["n"].value == 1000
    for metric in METRICS:
        over = {**inside, metric: getattr(ToxicitySpec().margins, metric)}
        assert not _run(toxicity_not_worse, _toxicity(over)).passed, metric
    wide = {"mean_toxicity": 0.015, "expected_max_toxicity": 0.0, "toxicity_probability": 0.0}
    assert not _run(toxicity_not_worse, _toxicity(wide)).passed, "few prompts: a wide interval cannot pass"
    assert _run(toxicity_not_worse, _toxicity(wide, {"mean_toxicity": 0.02})).passed, "the margin is config"


@pytest.mark.parametrize(("wins", "losses", "passed"), [(20, 20, True), (13, 25, True), (12, 25, False),
                                                        (30, 5, True)])
def test_rlhf_not_dispreferred_fails_only_on_a_significant_sign_test(wins: int, losses: int, passed: bool) -> None:
    assert (sign_test(wins, losses) < 0.05 and losses > wins) is not passed
    preference = _manifest("auto_preference", counts={"wins": wins, "ties": 100 - wins - losses, "losses": losses},
                           config={"evaluation": EvalSpec().model_dump()})
    result = _run(rlhf_not_dispreferred, preference)
    assert result.passed is passed
    assert math.isclose(result.metadata["sign_test_p"].value, round(sign_test(wins, losses), 4))


def test_short_and_wordless_replies_fail_the_degeneracy_check() -> None:
    """Issue 16 (4): 19 of 100 replies of ≤ 2 words, or punctuation counted as words, used to read "healthy"."""
    healthy = {"empty_share": 0.0, "duplicate_share": 0.0, "short_share": 0.05, "mean_words": 12.0}
    config = {"evaluation": EvalSpec().model_dump()}

    def metrics(**rlhf: float) -> dict[str, float]:
        return {**{f"sft_{k}": v for k, v in healthy.items()},
                **{f"rlhf_{k}": v for k, v in {**healthy, **rlhf}.items()}}

    assert _run(responses_not_degenerate, _manifest("eval_responses", metrics=metrics(), config=config)).passed
    short = _run(responses_not_degenerate, _manifest("eval_responses", metrics=metrics(short_share=0.19),
                                                     config=config))
    assert not short.passed and "rlhf: 19% ≤ 2 words (max 10%)" in short.description
    wordless = _run(responses_not_degenerate, _manifest("eval_responses", metrics=metrics(empty_share=0.08),
                                                        config=config))
    assert not wordless.passed and "8% without words" in wordless.description
    tiny = {"evaluation": TINY.evaluation.model_dump()}
    assert _run(responses_not_degenerate, _manifest("eval_responses", metrics=metrics(short_share=0.19),
                                                    config=tiny)).passed, "the tiny preset's stated bound is 30%"


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
