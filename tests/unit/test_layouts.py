"""Artifact layouts: one name per table, writers refuse a table without its columns, readers name what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rlhf_assets import layouts
from rlhf_assets.code_versions import PACKAGE_DIR, imported_modules
from rlhf_assets.layouts import RESPONSES, LayoutError, Table
from rlhf_assets.steps.runtime import EXIT_BAD_INPUT
from tests.process.test_steps import run_step

pytestmark = pytest.mark.unit


def test_a_table_round_trips_and_a_writer_cannot_drop_a_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"prompt_id": [0], "prompt": ["p"], "sft_response": ["a"], "rlhf_response": ["b"],
                          "kl_to_sft": [0.5], "extra": [1]})
    RESPONSES.write(frame, tmp_path)
    assert RESPONSES.read(tmp_path).equals(frame)
    with pytest.raises(LayoutError, match="refusing to write responses.parquet without column\\(s\\) kl_to_sft"):
        RESPONSES.write(frame.drop(columns="kl_to_sft"), tmp_path)


def test_a_reader_names_the_missing_file_or_columns(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"responses\.parquet is missing"):
        RESPONSES.read(tmp_path)
    pd.DataFrame({"prompt_id": [0], "prompt": ["p"]}).to_parquet(tmp_path / RESPONSES.file)
    with pytest.raises(LayoutError, match="has no column\\(s\\) sft_response, rlhf_response, kl_to_sft"):
        RESPONSES.read(tmp_path)


def test_every_table_has_its_own_file_and_no_module_repeats_a_table_file_name() -> None:
    tables = [value for value in vars(layouts).values() if isinstance(value, Table)]
    tables += list(layouts.PREFERENCE_SPLITS.values())
    files = [table.file for table in tables]
    assert len(files) == len(set(files)) >= 14
    repeated = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.name == "layouts.py":
            continue
        text = path.read_text()
        found = [name for name in files if f'"{name}"' in text]
        if found:
            repeated[str(path.relative_to(PACKAGE_DIR))] = found
    assert repeated == {}, "table file names belong in layouts.py"


def test_a_step_reports_a_wrong_artifact_as_bad_input(tmp_path: Path) -> None:
    """A channel holding another asset's artifact fails with exit code 2 and the missing file named."""
    channel = tmp_path / "eval_responses"
    channel.mkdir()
    (channel / "something_else.parquet").write_bytes(b"")
    result = run_step("auto_preference", {"evaluation": {}, "reward": {}, "judge": {}}, tmp_path / "out",
                      {"eval_responses": channel, "reward_model": tmp_path, "judge_model": tmp_path})
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
    assert "responses.parquet is missing" in result.stderr


def test_layouts_import_nothing_of_ours_and_load_without_dagster() -> None:
    assert [name for name in imported_modules(PACKAGE_DIR / "layouts.py") if name.startswith("rlhf_assets")] == []
    probe = "import sys, rlhf_assets.layouts; print('dagster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
