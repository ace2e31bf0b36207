"""Reading the preference artifact inside a step, with clear errors when a channel holds the wrong thing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rlhf_assets.layouts import PREFERENCE_SPLITS, LayoutError
from rlhf_assets.steps.runtime import StepInputError


def read_split(channel_dir: Path, split: str, limit: int | None = None) -> pd.DataFrame:
    """Load `train` or `test` rows of a preference_dataset artifact, optionally the first `limit` rows."""
    table = PREFERENCE_SPLITS[split]
    path = table.path(channel_dir)
    try:
        frame = table.read(channel_dir)
    except LayoutError as exc:
        raise StepInputError(f"{exc} (the channel should be a preference_dataset artifact)") from None
    if frame.empty:
        raise StepInputError(f"{path}: no rows")
    return frame.head(limit) if limit else frame
