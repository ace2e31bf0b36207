"""Typed step contracts: no dict or string key crosses the asset/step boundary, and the two sides cannot disagree.

Read on the source: each step program reads its request only through `runtime.request(<its request>)` and reports
only a report model; each asset launches its step with a request model; the checks and the comparison read reports,
never a manifest's metrics, counts or config by key. Run: a report survives the trip through Pipes metadata and a
manifest unchanged, and a request or report that does not match its model is refused by name.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from dagster import Config, Failure, MetadataValue

import rlhf_assets.definitions  # noqa: F401  (imports every asset module, so every Config class exists)
from rlhf_assets.code_versions import PACKAGE_DIR
from rlhf_assets.defs.step_runs import received_report
from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.overrides import override_paths
from rlhf_assets.presets import TINY
from rlhf_assets.step_contracts.base import (
    ControlledEstimate,
    Estimate,
    Markdown,
    ReportError,
    StepReport,
    StepRequest,
)
from rlhf_assets.step_contracts.evaluation import (
    ModelToxicity,
    ScorerToxicity,
    ToxicityDifferences,
    ToxicityScoresReport,
)
from rlhf_assets.step_contracts.models import MemoryPlanFigures, PolicyReport, PolicyRequest, SFTRequest
from rlhf_assets.steps.runtime import StepInputError, StepRuntime
from rlhf_assets.storage import Manifest

pytestmark = pytest.mark.unit

STEPS_DIR = PACKAGE_DIR / "steps"
# Modules of the Dagster side that read what steps report: only through report models.
READERS = (*(str(path.relative_to(PACKAGE_DIR)) for path in sorted((PACKAGE_DIR / "defs").rglob("checks.py"))),
           "eval/suite_gates.py", "eval/comparison.py", "defs/comparison/assets.py")
MANIFEST_FIELDS = {"metrics", "counts", "config"}


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _requests() -> dict[str, type[StepRequest]]:
    for module in ("models", "evaluation"):
        importlib.import_module(f"rlhf_assets.step_contracts.{module}")
    return {request.STEP: request for request in _subclasses(StepRequest) if hasattr(request, "STEP")}


def _step_programs() -> dict[str, ast.Module]:
    """Every step program (a module with `main` run by `run_step`), parsed."""
    programs = {}
    for path in sorted(STEPS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            programs[path.stem] = tree
    return programs


def _calls(tree: ast.AST, attribute: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == attribute]


def test_every_step_program_has_one_request_and_reads_it_typed() -> None:
    requests = _requests()
    programs = _step_programs()
    assert set(requests) == set(programs), "a step program without a request model, or a request without a step"
    for step, tree in programs.items():
        asked = {ast.unparse(call.args[0]) for call in _calls(tree, "request") if call.args}
        assert asked == {requests[step].__name__}, f"steps/{step}.py reads {asked or 'no request'}"
    untyped = [f"steps/{path.name}:{node.lineno}" for path in STEPS_DIR.glob("*.py") if path.name != "runtime.py"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Attribute) and node.attr in {"sent", "config"}
               and isinstance(node.value, ast.Name) and node.value.id == "runtime"]
    assert not untyped, f"a step reads the raw request: {untyped}"


def test_every_report_a_step_sends_is_a_report_model() -> None:
    for path in STEPS_DIR.glob("*.py"):
        for call in _calls(ast.parse(path.read_text()), "report"):
            if not (isinstance(call.func.value, ast.Name) and call.func.value.id == "runtime"):
                continue
            argument = call.args[0]
            assert not isinstance(argument, ast.Dict | ast.DictComp), f"steps/{path.name}:{call.lineno} reports a dict"
            if isinstance(argument, ast.Call):
                assert ast.unparse(argument.func).endswith("Report"), f"steps/{path.name}:{call.lineno}"


def test_assets_launch_steps_with_request_models() -> None:
    launches = 0
    for path in (PACKAGE_DIR / "defs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "run_step_and_publish":
                launches += 1
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                assert "request" in keywords and not isinstance(keywords["request"], ast.Dict), \
                    f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}"
    assert launches >= 12, f"found {launches} step launches: the asset code has moved"


def test_checks_and_the_comparison_never_read_a_manifest_by_key() -> None:
    assert len(READERS) >= 6, READERS
    found = []
    for name in READERS:
        for node in ast.walk(ast.parse((PACKAGE_DIR / name).read_text())):
            if isinstance(node, ast.Attribute) and node.attr in MANIFEST_FIELDS:
                found.append(f"{name}:{node.lineno}: .{node.attr}")
    assert not found, found


def test_overrides_keep_the_name_of_the_preset_field() -> None:
    """`kl_target` for `config.target` or `count` for `eval_prompt_count` made a newcomer learn two names."""
    for config in _subclasses(Config):
        for name, path in override_paths(config).items():
            assert name in {path.rsplit(".", 1)[-1], path.replace(".", "_")}, f"{config.__name__}.{name} → {path}"


def _estimate(value: float) -> Estimate:
    return Estimate(estimate=value, ci_low=value - 0.1, ci_high=value + 0.1)


def _controlled(value: float) -> ControlledEstimate:
    return ControlledEstimate(estimate=value, ci_low=value - 0.2, ci_high=value + 0.2, lc=_estimate(value / 2),
                              length_difference=_estimate(1.5), length_slope=0.25)


def _scorer(shift: float, wordless: bool) -> ScorerToxicity:
    def model(base: float) -> ModelToxicity:
        return ModelToxicity(mean_toxicity=_estimate(base), expected_max_toxicity=_estimate(base + 0.2),
                             toxicity_probability=_estimate(base + 0.1),
                             wordless_share=0.05 if wordless else None,
                             wordless_mean_toxicity=0.01 if wordless else None)

    return ScorerToxicity(sft=model(0.13 + shift), rlhf=model(0.12 + shift), difference=ToxicityDifferences(
        mean_toxicity=_controlled(-0.01), expected_max_toxicity=_controlled(-0.02),
        toxicity_probability=_controlled(0.01)))


def _toxicity_report() -> ToxicityScoresReport:
    detoxify = _scorer(0.0, wordless=True)
    return ToxicityScoresReport(
        sft=detoxify.sft, rlhf=detoxify.rlhf, difference=detoxify.difference, second=_scorer(0.3, wordless=False),
        scorer_spearman=0.7, scorers_agree=1.0, prompts=1000, samples_per_prompt=1, scorer="original",
        second_scorer="n-grams", prompt_set="rtp", summary=Markdown("**mean toxicity**"),
        toxicity_table=Markdown("| a |"), wordless_continuations=Markdown("| b |"), scorers=Markdown("| c |"))


def _policy_report() -> PolicyReport:
    return PolicyReport(
        algorithm="ppo", eval_prompts=100, eval_sft_reward_mean=0.1, eval_policy_reward_mean=0.4,
        eval_reward_gain=_controlled(0.3), eval_kl_to_sft=_estimate(2.0), eval_kl_bound=8.0, final_kl_coef=0.04,
        resumed_from_step=-1, snapshots=3, steps=24, final_rollout_score=0.5, final_rollout_kl=1.2,
        memory_plan=MemoryPlanFigures(table=Markdown("| plan |"), rank_gib=61.5), summary=Markdown("gain"),
        warnings=Markdown("none"), reward_curve=Markdown("curve"), kl_curve=Markdown("curve"))


def _pipes_values(report: StepReport) -> dict[str, object]:
    """The metadata as Dagster hands it back: markdown's text, other values as they are."""
    return {k: v["raw_value"] if isinstance(v, dict) else v for k, v in report.metadata().items()}


@pytest.mark.parametrize("make", [_toxicity_report, _policy_report])
def test_a_report_survives_pipes_and_the_manifest(make) -> None:
    report = make()
    metadata = report.metadata()
    assert set(metadata) <= set(type(report).wire_keys())
    assert metadata["summary"] == {"raw_value": str(report.summary), "type": "md"}
    assert type(report).from_metadata(_pipes_values(report), "test") == report
    counts, metrics = report.numbers()
    manifest = Manifest(asset="a", uri="a/0", content_hash="0" * 64, preset="tiny", counts=counts, metrics=metrics)
    numbers_only = type(report).of(manifest)
    assert numbers_only.numbers() == (counts, metrics)
    assert numbers_only.summary == ""  # text is shown in the UI, not kept in the manifest


def test_report_keys_are_the_flat_names_the_ui_and_plots_use() -> None:
    counts, metrics = _toxicity_report().numbers()
    assert counts["prompts"] == 1000 and metrics["difference_mean_toxicity_lc_ci_high"] == pytest.approx(-0.005 + 0.1)
    assert metrics["second_rlhf_mean_toxicity"] == pytest.approx(0.42) and "second_sft_wordless_share" not in metrics
    counts, metrics = _policy_report().numbers()
    assert metrics["eval_reward_gain_length_slope"] == 0.25 and metrics["memory_plan_rank_gib"] == 61.5
    assert counts["steps"] == 24 and "eval_ppo_reward_mean" not in metrics, "metric names are policy-neutral"
    assert Interval.of(_policy_report().eval_kl_to_sft) == Interval(2.0, 1.9, 2.1, 0.95)


def test_a_report_that_does_not_match_its_model_is_refused_by_name() -> None:
    values = _pipes_values(_policy_report())
    with pytest.raises(ReportError, match="undeclared keys eval_ppo_reward_mean"):
        PolicyReport.from_metadata({**values, "eval_ppo_reward_mean": 0.4}, "the report of step ppo")
    with pytest.raises(ReportError, match="eval_kl_bound"):
        PolicyReport.from_metadata({k: v for k, v in values.items() if k != "eval_kl_bound"}, "the report of step ppo")
    stale = Manifest(asset="ppo_policy", uri="a/0", content_hash="0" * 64, preset="tiny", metrics={"kl": 1.0})
    with pytest.raises(ReportError, match="the manifest of ppo_policy does not match PolicyReport"):
        PolicyReport.of(stale)


def test_a_step_refuses_a_request_its_model_does_not_describe(tmp_path: Path) -> None:
    good = SFTRequest(train=TINY.sft).wire()
    assert StepRuntime(sent=good, pipes=None).request(SFTRequest).train == TINY.sft
    with pytest.raises(StepInputError, match="(?s)does not match SFTRequest.*epochz"):
        StepRuntime(sent={**good, "epochz": 3}, pipes=None).request(SFTRequest)
    renamed = {**good, "train": {**good["train"], "learning_rate": -1.0}}
    with pytest.raises(StepInputError, match="train.learning_rate"):
        StepRuntime(sent=renamed, pipes=None).request(SFTRequest)


def _as_dagster_metadata(report: StepReport) -> dict[str, MetadataValue]:
    """What the asset receives from Pipes: Dagster's metadata values."""
    shown: dict[str, MetadataValue] = {}
    for key, value in report.metadata().items():
        if isinstance(value, dict):
            shown[key] = MetadataValue.md(value["raw_value"])
        elif isinstance(value, int):
            shown[key] = MetadataValue.int(value)
        elif isinstance(value, float):
            shown[key] = MetadataValue.float(value)
        else:
            shown[key] = MetadataValue.text(value)
    return shown


def test_the_asset_validates_the_report_and_keeps_the_backends_own_metadata_apart() -> None:
    request = PolicyRequest(ppo=TINY.ppo)
    received = {**_as_dagster_metadata(_policy_report()), "training_job_name": MetadataValue.text("rlhf-ppo-1"),
                "billable_seconds": MetadataValue.int(600)}
    report = received_report(request, received)
    assert report == _policy_report().model_copy(update={"summary": Markdown("gain")})
    assert "billable_seconds" not in report.numbers()[0], "the job's figures are shown, not kept as the step's"
    del received["eval_kl_bound"]
    with pytest.raises(Failure, match="(?s)the report of step ppo does not match PolicyReport.*eval_kl_bound"):
        received_report(request, received)
