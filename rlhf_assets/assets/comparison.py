"""`policy_comparison`: every materialized policy against SFT in one table, each figure with its CI.

It depends on every policy's evaluation suite (lineage shows them all) and reads each suite's latest *recorded*
materialization; a policy whose suite was never materialized is listed as not evaluated rather than failing the
comparison, so materializing one new policy and its suite is enough to see it beside the others.
"""

import tempfile
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, Failure, MetadataValue, Output, asset

from rlhf_assets.assets.common import publish
from rlhf_assets.assets.policy_evaluation import POLICIES, SUITE, EvaluatedPolicy
from rlhf_assets.code_versions import code_version, step_code_version
from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.comparison import (
    PolicyRow,
    comparison_plot,
    comparison_table,
    policy_row,
    rows_frame,
    versions_table,
)
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.resources import ArtifactStoreResource, ManifestRecordError, PresetResource, recorded_manifest
from rlhf_assets.storage import ArtifactStore, Manifest

COMPARISON_KEY = AssetKey("policy_comparison")
COMPARISON_FILE = "comparison.parquet"
VERSION_CHARS = 12


def _suite_row(policy: EvaluatedPolicy, trained: Manifest, suite: dict[str, Manifest],
               store: ArtifactStore) -> PolicyRow:
    outcomes = pd.read_parquet(store.local_path(suite["auto_preference"].uri) / "outcomes.parquet")
    responses = pd.read_parquet(store.local_path(suite["eval_responses"].uri) / "responses.parquet")
    versions = {"policy": trained.content_hash[:VERSION_CHARS], "policy code": step_code_version(policy.step)}
    versions |= {name: manifest.content_hash[:VERSION_CHARS] for name, manifest in suite.items()}
    return policy_row(policy.label, outcomes, responses, suite["auto_preference"].metrics,
                      suite["auto_preference"].counts, suite["toxicity_scores"].metrics,
                      suite["toxicity_scores"].counts["prompts"], versions)


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
       deps=[AssetKey(p.asset) for p in POLICIES] + [p.key(name) for p in POLICIES for name in SUITE])
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
        rows.append(_suite_row(policy, trained, suite, store))
    if not rows:
        raise Failure(f"no policy has a materialized evaluation suite ({', '.join(missing)}): materialize a policy "
                      "and its eval_responses, toxicity_scores and auto_preference first")
    with tempfile.TemporaryDirectory() as tmp:
        rows_frame(rows).to_parquet(Path(tmp) / COMPARISON_FILE, index=False)
        metrics = {k: v for r in rows for k, v in r.flat().items()}
        return publish(
            context, store, Path(tmp), preset=preset.name.value,
            config={"policies": [r.policy for r in rows], "not_evaluated": missing},
            counts={"policies": len(rows)}, metrics=metrics,
            metadata={"summary": MetadataValue.md(_summary(rows, missing)),
                      "comparison": MetadataValue.md(comparison_table(rows)),
                      "plot": MetadataValue.md(comparison_plot(rows)),
                      "versions": MetadataValue.md(versions_table(rows))},
        )
