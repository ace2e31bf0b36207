"""What every domain shares: turning a published artifact into an Output, previews of tables, gate verdicts as
check results."""


from pathlib import Path
from typing import Any

import pandas as pd
from dagster import AssetCheckResult, AssetExecutionContext, DataVersion, MetadataValue, Output, TableRecord

from rlhf_assets.eval.gates import GateResult
from rlhf_assets.storage import ArtifactStore, Manifest

# UI groups shared across domains: the inputs every policy is evaluated on, and the comparison of all of them.
EVALUATION_GROUP = "evaluation"
COMPARISON_GROUP = "comparison"


def publish(context: AssetExecutionContext, store: ArtifactStore, local_dir: Path, **manifest_fields: Any
            ) -> Output[Manifest]:
    """Publish `local_dir` to the store and return its manifest (`manifest_output`'s fields) as the Output."""
    published = store.publish_directory(local_dir, context.asset_key.to_python_identifier())
    return manifest_output(context, store, published, **manifest_fields)


def manifest_output(
    context: AssetExecutionContext,
    store: ArtifactStore,
    published: tuple[str, str, list[str]],
    *,
    preset: str,
    config: dict[str, Any],
    counts: dict[str, int] | None = None,
    metrics: dict[str, float] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Output[Manifest]:
    """The manifest of an artifact already in the store (its name relative to the root, content hash, files), as
    the asset's Output; the metadata also shows where the artifact is now, for people to find it."""
    name = context.asset_key.to_python_identifier()
    uri, content_hash, files = published
    manifest = Manifest(
        asset=name, uri=uri, content_hash=content_hash, preset=preset, config=config,
        counts=counts or {}, metrics=metrics or {}, files=files,
    )
    location = store.resolve(uri)
    context.log.info(f"published {name} to {location}")
    # Tables and text before the flat numbers: the UI lists about 100 entries before "Show more".
    shown = summary_first({
        **(metadata or {}),
        "artifact": MetadataValue.text(uri),
        "artifact_uri": MetadataValue.path(location),
        "content_hash": MetadataValue.text(content_hash),
        "preset": MetadataValue.text(preset),
        **{k: MetadataValue.int(v) for k, v in manifest.counts.items()},
        **{k: MetadataValue.float(v) for k, v in manifest.metrics.items()},
    })
    return Output(manifest, data_version=DataVersion(content_hash), metadata=shown)


LEADING_ENTRIES = ("policy_table", "summary")  # what a reader starts with: policy_comparison's table, else the summary


def summary_first(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata with its leading entries (`LEADING_ENTRIES`, where present) first, then the rest: the UI lists
    entries in order, and a reader should not scroll past 60 numbers to the table. Stored results come back in
    another order (serialization sorts keys), so reuse passes through here too."""
    leading = {key: metadata[key] for key in LEADING_ENTRIES if key in metadata}
    return {**leading, **{k: v for k, v in metadata.items() if k not in leading}}


def preview_table(frame: pd.DataFrame, columns: list[str], rows: int = 5, width: int = 160) -> MetadataValue:
    """A few rows as a Dagster table (rendered as text, so dialogue markup is never interpreted)."""
    records = [
        TableRecord({c: _clip(str(row[c]), width) for c in columns}) for _, row in frame.head(rows).iterrows()
    ]
    return MetadataValue.table(records)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def gate_result(gate: GateResult) -> AssetCheckResult:
    """A gate's verdict as Dagster's check result: the checks and `policy_comparison` decide by the same gates."""
    return AssetCheckResult(passed=gate.passed, description=gate.description, metadata=gate.metadata)
