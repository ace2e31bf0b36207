"""Shared fixtures: the real HH data from ../shared (skipped with a reason when absent) and isolated stores."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlhf_assets.presets import SHARED_HH_PATH


@pytest.fixture(scope="session")
def shared_hh_path() -> Path:
    if not SHARED_HH_PATH.exists():
        pytest.skip(f"real HH data not found at {SHARED_HH_PATH} (../shared/data is provided in CI)")
    return SHARED_HH_PATH


def write_jsonl(path: Path, rows: list[object], *, gz: bool = False) -> Path:
    """Write rows (dicts, or raw strings written verbatim) as JSON Lines."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def hh_row(prompt_turn: str, chosen: str, rejected: str) -> dict[str, str]:
    """One HH-format row whose dialogues share the prompt and differ in the last Assistant turn."""
    prefix = f"\n\nHuman: {prompt_turn}\n\nAssistant:"
    return {"chosen": prefix + " " + chosen, "rejected": prefix + " " + rejected}
