"""Checks on the datasets: no row with an empty text field and no duplicate row, read from the published files."""

import pandas as pd
from dagster import AssetCheckResult, AssetChecksDefinition, MetadataValue, asset_check

from rlhf_assets.layouts import EVAL_PROMPTS, PREFERENCE_SPLITS, Table
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.storage import Manifest


def rows_clean_check(name: str, tables: tuple[Table, ...], columns: tuple[str, ...],
                     blocking: bool) -> AssetChecksDefinition:
    """A check that a dataset's files have no row with an empty text column and no duplicate row: either would
    weigh one example twice or teach the model to answer nothing."""

    @asset_check(asset=name, name=f"{name}_rows_clean", blocking=blocking,
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


def data_checks(blocking: bool) -> list[AssetChecksDefinition]:
    """The preference data's and the eval prompts' row checks."""
    return [rows_clean_check("preference_dataset", tuple(PREFERENCE_SPLITS.values()), ("prompt", "chosen", "rejected"),
                             blocking),
            rows_clean_check("eval_prompts", (EVAL_PROMPTS,), ("prompt",), blocking)]
