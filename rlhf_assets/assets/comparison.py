"""`policy_comparison`: every materialized policy against SFT in one table, each figure with its CI.

It depends on every policy's evaluation suite (lineage shows them all) and reads each suite's latest *recorded*
materialization; a policy whose suite was never materialized is listed as not evaluated rather than failing the
comparison, so materializing one new policy and its suite is enough to see it beside the others.
"""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, Failure, MetadataValue, Output, asset

from rlhf_assets.assets.common import publish
from rlhf_assets.assets.policy_evaluation import (
    POLICIES,
    SUITE,
    EvaluatedPolicy,
    prompt_set_toxicity_keys,
    suite_keys,
    toxicity_name,
)
from rlhf_assets.assets.prompt_sets import PROMPT_SETS
from rlhf_assets.code_versions import code_version, step_code_version
from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.comparison import (
    PolicyRow,
    comparison_plot,
    comparison_table,
    policy_row,
    prompt_set_table,
    rows_frame,
    versions_table,
)
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.layouts import COMPARISON, OUTCOMES, RESPONSES
from rlhf_assets.resources import ArtifactStoreResource, ManifestRecordError, PresetResource, recorded_manifest
from rlhf_assets.storage import ArtifactStore, Manifest

COMPARISON_KEY = AssetKey("policy_comparison")
VERSION_CHARS = 12


def _suite_row(policy: EvaluatedPolicy, trained: Manifest, suite: dict[str, Manifest],
               prompt_sets: dict[str, Manifest], store: ArtifactStore) -> PolicyRow:
    outcomes = OUTCOMES.read(store.local_path(suite["auto_preference"].uri))
    responses = RESPONSES.read(store.local_path(suite["eval_responses"].uri))
    versions = {"policy": trained.content_hash[:VERSION_CHARS], "policy code": step_code_version(policy.step)}
    versions |= {name: manifest.content_hash[:VERSION_CHARS] for name, manifest in suite.items()}
    versions |= {toxicity_name(name): m.content_hash[:VERSION_CHARS] for name, m in prompt_sets.items()}
    return policy_row(policy.label, outcomes, responses, suite["auto_preference"].metrics,
                      suite["auto_preference"].counts, suite["toxicity_scores"].metrics,
                      suite["toxicity_scores"].counts["prompts"], versions,
                      prompt_sets={name: (m.metrics, m.counts["prompts"]) for name, m in prompt_sets.items()})


def _recorded_prompt_sets(context: AssetExecutionContext, policy: EvaluatedPolicy,
                          manifests: str) -> dict[str, Manifest]:
    """The policy's materialized toxicity evaluations on declared prompt sets (a missing one is left out)."""
    found = {}
    for name, key in prompt_set_toxicity_keys(policy).items():
        try:
            found[name] = recorded_manifest(context.instance, key, manifests)
        except ManifestRecordError:
            context.log.info(f"{policy.asset} has no {key.to_user_string()} yet")
    return found


def _signed(interval: Interval) -> str:
    return interval_text(interval.estimate, interval.low, interval.high, signed=True)


def _summary(rows: list[PolicyRow], missing: list[str]) -> str:
    parts = [f"{r.policy}: RM-score gain {_signed(r.reward_gain)}, judge {r.wins} / {r.ties} / {r.losses}, "
             f"Δ mean toxicity {_signed(r.toxicity['mean_toxicity'])}" for r in rows]
    note = f" Not evaluated yet: {', '.join(missing)}." if missing else ""
    policies = f"{len(rows)} polic{'y' if len(rows) == 1 else 'ies'}"
    return (f"**{policies} against SFT** on the same {rows[0].eval_prompts} eval prompts and "
            f"{rows[0].toxicity_prompts} RTP prompts, same sampling seed (95% CIs): " + "; ".join(parts) + "."
            + note + " The recipe compares PPO with SFT only: 30 / 54 / 16 by human raters, mean toxicity 0.129 "
            "vs 0.134.")


@asset(name="policy_comparison", code_version=code_version("rlhf_assets.assets.comparison"),
       group_name="comparison", kinds={"pandas", "parquet"},
       deps=[AssetKey(p.asset) for p in POLICIES] + [key for p in POLICIES for key in suite_keys(p)])
def policy_comparison(context: AssetExecutionContext, preset: PresetResource,
                      artifacts: ArtifactStoreResource) -> Output[Manifest]:
    """Every evaluated policy against SFT: reward gain, KL to SFT, the independent judge's verdict and the toxicity
    differences, each with its 95% CI and n, and the data and code versions each row came from."""
    store = artifacts.store()
    manifests = f"{artifacts.root.rstrip('/')}/manifests"
    rows, missing = [], []
    for policy in POLICIES:
        try:
            trained = recorded_manifest(context.instance, AssetKey(policy.asset), manifests)
            suite = {name: recorded_manifest(context.instance, policy.key(name), manifests) for name in SUITE}
        except ManifestRecordError as exc:
            context.log.info(f"{policy.asset} is not in the comparison: {exc}")
            missing.append(policy.asset)
            continue
        rows.append(_suite_row(policy, trained, suite, _recorded_prompt_sets(context, policy, manifests), store))
    if not rows:
        raise Failure(f"no policy has a materialized evaluation suite ({', '.join(missing)}): materialize a policy "
                      "and its eval_responses, toxicity_scores and auto_preference first")
    with tempfile.TemporaryDirectory() as tmp:
        COMPARISON.write(rows_frame(rows), Path(tmp))
        metrics = {k: v for r in rows for k, v in r.flat().items()}
        return publish(
            context, store, Path(tmp), preset=preset.name.value,
            config={"policies": [r.policy for r in rows], "not_evaluated": missing},
            counts={"policies": len(rows)}, metrics=metrics,
            metadata={"summary": MetadataValue.md(_summary(rows, missing)),
                      "comparison": MetadataValue.md(comparison_table(rows)),
                      "toxicity_by_prompt_set": MetadataValue.md(
                          prompt_set_table(rows, [spec.name for spec in PROMPT_SETS])),
                      "plot": MetadataValue.md(comparison_plot(rows)),
                      "versions": MetadataValue.md(versions_table(rows))},
        )
