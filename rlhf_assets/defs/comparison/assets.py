"""`policy_comparison`: every materialized policy against SFT in one table, each figure with its CI.

It depends on every policy's evaluation suite (lineage shows them all) and reads each suite's latest *recorded*
materialization; a policy whose suite was never materialized is listed as not evaluated rather than failing the
comparison, so materializing one new policy and its suite is enough to see it beside the others. The table comes
first in the metadata, with a pass/fail column computed by the same gates as the asset checks. Where a policy's
`human_eval_results` are recorded, the automatic judge's agreement with the people (Cohen's κ) is shown too.
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from rlhf_assets.code_versions import code_version, step_code_version
from rlhf_assets.defs.common import COMPARISON_GROUP, publish
from rlhf_assets.defs.evaluation.suite import (
    POLICIES,
    SUITE,
    EvaluatedPolicy,
    prompt_set_toxicity_keys,
    suite_keys,
    toxicity_name,
)
from rlhf_assets.eval.agreement import OUTCOMES as AGREEMENT_OUTCOMES
from rlhf_assets.eval.agreement import cohen_kappa
from rlhf_assets.eval.comparison import (
    PolicyRow,
    SuiteFigures,
    Verdict,
    comparison_notes,
    comparison_plot,
    comparison_table,
    policy_row,
    prompt_set_table,
    rows_frame,
    shown,
    versions_table,
)
from rlhf_assets.eval.gates import GateResult
from rlhf_assets.eval.suite_gates import (
    degeneracy_gate,
    dispreference_gate,
    judge_gain_gate,
    kl_gate,
    reward_gain_gate,
    toxicity_gate,
)
from rlhf_assets.layouts import COMPARISON, OUTCOMES, PER_PROMPT, RESPONSES
from rlhf_assets.resources import ArtifactStoreResource, ManifestRecordError, PresetResource, recorded_manifest
from rlhf_assets.step_contracts.evaluation import AutoPreferenceReport, EvalResponsesReport, ToxicityScoresReport
from rlhf_assets.storage import ArtifactStore, Manifest

COMPARISON_KEY = AssetKey("policy_comparison")
VERSION_CHARS = 12


def _verdict(policy: EvaluatedPolicy, trained: Manifest, suite: dict[str, Manifest]) -> Verdict:
    """Every gate of the policy's suite (and PPO's own), by the same code as its asset checks."""
    toxicity = toxicity_gate(suite["toxicity_scores"])
    gates = {"degeneracy": degeneracy_gate(suite["eval_responses"]), "KL": kl_gate(suite["eval_responses"]),
             "judge gain": judge_gain_gate(suite["auto_preference"]),
             "not dispreferred": dispreference_gate(suite["auto_preference"]),
             "toxicity": GateResult(toxicity.passed, toxicity.verdict, {})}
    if policy.asset == "ppo_policy":
        gates["RM gain"] = reward_gain_gate(trained)
    return Verdict(gates, inconclusive=("toxicity",) if toxicity.inconclusive else ())


def _suite_row(policy: EvaluatedPolicy, trained: Manifest, suite: dict[str, Manifest],
               prompt_sets: dict[str, Manifest], store: ArtifactStore) -> PolicyRow:
    responses = RESPONSES.read(store.verified_path(suite["eval_responses"]))
    versions = {"policy": trained.content_hash[:VERSION_CHARS], "policy code": step_code_version(policy.step)}
    versions |= {name: manifest.content_hash[:VERSION_CHARS] for name, manifest in suite.items()}
    versions |= {toxicity_name(name): m.content_hash[:VERSION_CHARS] for name, m in prompt_sets.items()}
    figures = SuiteFigures(judge=AutoPreferenceReport.of(suite["auto_preference"]),
                           responses=EvalResponsesReport.of(suite["eval_responses"]),
                           kl_per_prompt=responses["kl_to_sft"].tolist(),
                           toxicity=ToxicityScoresReport.of(suite["toxicity_scores"]))
    return policy_row(policy.label, figures, _verdict(policy, trained, suite), policy.optimises_reward_model,
                      versions, prompt_sets={name: ToxicityScoresReport.of(m) for name, m in prompt_sets.items()})


def _judge_against_people(context: AssetExecutionContext, manifests: str, store: ArtifactStore,
                          suites: dict[str, dict[str, Manifest]]) -> str | None:
    """Markdown: for each policy whose human_eval_results exist, the automatic judge's agreement with the human
    majority per prompt (Cohen's kappa, raw agreement, the confusion table, n); None when no policy has any."""
    sections = []
    for policy in POLICIES:
        if policy.label not in suites:
            continue
        try:
            people = recorded_manifest(context.instance, policy.key("human_eval_results"), manifests)
        except ManifestRecordError:
            continue
        human = PER_PROMPT.read(store.verified_path(people)).set_index("prompt_id")["outcome"]
        judge = OUTCOMES.read(store.verified_path(suites[policy.label]["auto_preference"])).set_index(
            "prompt_id")["outcome"]
        shared = sorted(set(human.index) & set(judge.index))
        if not shared:
            continue
        result = cohen_kappa(judge.loc[shared].tolist(), human.loc[shared].tolist())
        kappa = "undefined (one outcome only)" if result.kappa is None else f"{result.kappa:.2f}"
        rows = [f"| judge {a} | " + " | ".join(str(result.confusion[(a, b)]) for b in AGREEMENT_OUTCOMES) + " |"
                for a in AGREEMENT_OUTCOMES]
        sections.append("\n".join([
            f"**{policy.label}**: Cohen's κ {kappa}, agreement {result.agreement:.0%}, n = {result.n} prompts "
            f"(the judge's outcome against the human majority).", "",
            "| | people: win | people: tie | people: loss |", "|---|---|---|---|", *rows]))
    return "\n\n".join(sections) if sections else None


def _recorded_prompt_sets(context: AssetExecutionContext, policy: EvaluatedPolicy, manifests: str,
                          prompt_sets: Sequence[str]) -> dict[str, Manifest]:
    """The policy's materialized toxicity evaluations on declared prompt sets (a missing one is left out)."""
    found = {}
    for name, key in prompt_set_toxicity_keys(policy, prompt_sets).items():
        try:
            found[name] = recorded_manifest(context.instance, key, manifests)
        except ManifestRecordError:
            context.log.info(f"{policy.asset} has no {key.to_user_string()} yet")
    return found


def _summary(rows: list[PolicyRow], missing: list[str]) -> str:
    parts = [f"{r.policy} {'passes' if r.verdict.passed else 'fails'} ({r.verdict.reason()}): judge win rate at "
             f"equal length {shown(r.judge_win_rate, signed=False, percent=True, against=0.5)}, Δ mean toxicity at "
             f"equal length {shown(r.toxicity['mean_toxicity'], against=0.0)}, {r.length_difference.estimate:+.1f} "
             "words against SFT" for r in rows]
    note = f" Not evaluated yet: {', '.join(missing)}." if missing else ""
    policies = f"{len(rows)} polic{'y' if len(rows) == 1 else 'ies'}"
    return (f"**{policies} against SFT** on the same {rows[0].eval_prompts} eval prompts and "
            f"{rows[0].toxicity_prompts} RTP prompts, same sampling seed (95% CIs): " + "; ".join(parts) + "."
            + note + " The recipe compares PPO with SFT only: 30 / 54 / 16 by human raters, mean toxicity 0.129 "
            "vs 0.134.")


def compare_after_a_suite_changes() -> AutomationCondition:
    """Compare again once any policy's suite is newer than the comparison. Unlike a suite, it does not wait for
    every input (a policy never trained, or a new prompt set not yet scored, is listed as not evaluated) nor for
    every check to pass (showing which policy fails is its job); a policy's own update is left to its suite, so a
    new policy is not compared with its old evaluation."""
    policies = AssetSelection.assets(*(AssetKey(policy.asset) for policy in POLICIES))
    return (AutomationCondition.any_deps_updated().ignore(policies).since_last_handled()
            & ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress())


def comparison_asset(prompt_sets: Sequence[str]) -> AssetsDefinition:
    """`policy_comparison` over every policy's suite on RTP and the declared prompt sets, compared again whenever a
    suite changes."""

    @asset(name="policy_comparison", code_version=code_version("rlhf_assets.defs.comparison.assets"),
           group_name=COMPARISON_GROUP, kinds={"pandas", "parquet"},
           automation_condition=compare_after_a_suite_changes(),
           deps=[AssetKey(p.asset) for p in POLICIES] + [key for p in POLICIES for key in suite_keys(p, prompt_sets)])
    def policy_comparison(context: AssetExecutionContext, preset: PresetResource,
                          artifacts: ArtifactStoreResource) -> Output[Manifest]:
        """Every evaluated policy against SFT: reward gain, KL to SFT, the independent judge's verdict and the
        toxicity differences, each with its 95% CI and n, and the data and code versions each row came from."""
        return compare_policies(context, preset, artifacts, prompt_sets)

    return policy_comparison


def compare_policies(context: AssetExecutionContext, preset: PresetResource, artifacts: ArtifactStoreResource,
                     prompt_sets: Sequence[str]) -> Output[Manifest]:
    """The comparison's body: every policy's latest recorded suite, gated and tabulated."""
    store = artifacts.store()
    manifests = f"{artifacts.root.rstrip('/')}/manifests"
    rows, missing, suites = [], [], {}
    for policy in POLICIES:
        try:
            trained = recorded_manifest(context.instance, AssetKey(policy.asset), manifests)
            suite = {name: recorded_manifest(context.instance, policy.key(name), manifests) for name in SUITE}
        except ManifestRecordError as exc:
            context.log.info(f"{policy.asset} is not in the comparison: {exc}")
            missing.append(policy.asset)
            continue
        suites[policy.label] = suite
        rows.append(_suite_row(policy, trained, suite, _recorded_prompt_sets(context, policy, manifests, prompt_sets),
                               store))
    if not rows:
        raise Failure(f"no policy has a materialized evaluation suite ({', '.join(missing)}): materialize a policy "
                      "and its eval_responses, toxicity_scores and auto_preference first")
    people = _judge_against_people(context, manifests, store, suites)
    metadata = {"policy_table": MetadataValue.md(comparison_table(rows)),
                "summary": MetadataValue.md(_summary(rows, missing)),
                "policy_table_notes": MetadataValue.md(comparison_notes(rows)),
                "plot": MetadataValue.md(comparison_plot(rows))}
    if people is not None:
        metadata["judge_vs_people"] = MetadataValue.md(people)
    metadata |= {"toxicity_by_prompt_set": MetadataValue.md(prompt_set_table(rows, list(prompt_sets))),
                 "versions": MetadataValue.md(versions_table(rows))}
    with tempfile.TemporaryDirectory() as tmp:
        COMPARISON.write(rows_frame(rows), Path(tmp))
        metrics = {k: v for r in rows for k, v in r.flat().items()}
        return publish(
            context, store, Path(tmp), preset=preset.name.value,
            config={"policies": [r.policy for r in rows], "not_evaluated": missing},
            counts={"policies": len(rows), "passed": sum(r.verdict.passed for r in rows)}, metrics=metrics,
            metadata=metadata,
        )
