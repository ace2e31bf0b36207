"""SFT's side of every comparison, sampled once: what a policy's evaluation reads instead of sampling SFT again.

Every policy is compared with the same SFT model on the same prompts, with the same generation settings and seed,
so SFT's responses (and its scored toxicity continuations) are the same for every policy. The `sft_model/...`
assets compute them once (`steps/sft_responses.py`, `steps/sft_toxicity.py`) and record the settings they were
drawn with; a policy's step reads them and refuses them when its own settings differ (a seed override on one side
only), so a comparison never mixes draws.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf_assets.layouts import SAMPLING_RECORD
from rlhf_assets.steps.runtime import StepInputError


def write_sampling_record(directory: Path, settings: dict[str, Any]) -> None:
    """Record how the baseline was sampled, beside its table."""
    (directory / SAMPLING_RECORD).write_text(json.dumps(settings, indent=2, sort_keys=True))


def check_sampling_record(directory: Path, settings: dict[str, Any], baseline: str) -> None:
    """Refuse SFT samples drawn with other settings than this evaluation's, naming every differing field."""
    record = directory / SAMPLING_RECORD
    if not record.is_file():
        raise StepInputError(f"{record} is missing: the channel is not an SFT baseline artifact")
    drawn = json.loads(record.read_text())
    wanted = json.loads(json.dumps(settings, sort_keys=True))
    differing = sorted(_differences(drawn, wanted))
    if differing:
        details = "; ".join(f"{field}: SFT sampled with {a!r}, this evaluation with {b!r}" for field, a, b in differing)
        raise StepInputError(f"{baseline} was sampled with other settings than this evaluation ({details}): "
                             f"materialize {baseline} with the same overrides")


def _differences(drawn: Any, wanted: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(drawn, dict) and isinstance(wanted, dict):
        return [difference for key in sorted(set(drawn) | set(wanted))
                for difference in _differences(drawn.get(key), wanted.get(key), f"{path}.{key}" if path else key)]
    return [] if drawn == wanted else [(path, drawn, wanted)]
