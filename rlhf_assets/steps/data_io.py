"""Reading the preference artifact inside a step, with clear errors when a channel holds the wrong thing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rlhf_assets.steps.runtime import StepInputError

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def read_split(channel_dir: Path, split: str, limit: int | None = None) -> pd.DataFrame:
    """Load `train` or `test` rows of a preference_dataset artifact, optionally the first `limit` rows."""
    path = channel_dir / f"{split}.parquet"
    if not path.exists():
        raise StepInputError(f"{path} is missing: the channel is not a preference_dataset artifact")
    frame = pd.read_parquet(path)
    missing = [c for c in PREFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise StepInputError(f"{path}: missing column(s) {missing}")
    if frame.empty:
        raise StepInputError(f"{path}: no rows")
    return frame.head(limit) if limit else frame
