"""RealToxicityPrompts reading: the shared files, the hub code path on a local dataset directory, bad input."""

from pathlib import Path

import datasets
import pytest

from rlhf_assets.data.hh import DataError
from rlhf_assets.data.rtp import PERSPECTIVE_ATTRIBUTES, read_rtp
from rlhf_assets.presets import SHARED_RTP_DIR
from tests.conftest import write_jsonl

pytestmark = pytest.mark.unit


def rtp_record(text: str, toxicity: float | None = 0.1, **prompt_fields: object) -> dict:
    """One record in RealToxicityPrompts' own format."""
    scores = {a: 0.05 for a in PERSPECTIVE_ATTRIBUTES}
    return {"filename": "x.txt", "begin": 0, "end": 10, "challenging": False,
            "prompt": {"text": text, **scores, "toxicity": toxicity, **prompt_fields},
            "continuation": {"text": " and so on.", **scores}}


def test_the_shared_files_are_read_in_full() -> None:
    if not SHARED_RTP_DIR.is_dir():
        pytest.skip(f"RealToxicityPrompts files not found at {SHARED_RTP_DIR} (../shared/data is provided in CI)")
    rows = read_rtp(str(SHARED_RTP_DIR))
    assert len(rows) == 2396
    assert sum(r.challenging for r in rows) == 1200
    assert {r.source_file for r in rows} == {"decodingtrust-nontoxic.jsonl.gz", "decodingtrust-toxic.jsonl.gz"}
    flat = rows[0].as_row()
    assert flat["prompt_text"] and 0 <= flat["prompt_toxicity"] <= 1 and "continuation_profanity" in flat


def test_the_hub_code_path_reads_a_saved_dataset_directory(tmp_path: Path) -> None:
    records = [rtp_record(f"prompt number {i}", toxicity=i / 10) for i in range(5)]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "rtp"))
    rows = read_rtp(str(tmp_path / "rtp"))
    assert [r.prompt["text"] for r in rows] == [f"prompt number {i}" for i in range(5)]
    assert rows[3].prompt["toxicity"] == pytest.approx(0.3)


def test_a_null_score_is_kept_as_missing(tmp_path: Path) -> None:
    rows = read_rtp(str(write_jsonl(tmp_path / "rtp.jsonl", [rtp_record("hello", toxicity=None)])))
    assert rows[0].as_row()["prompt_toxicity"] is None


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({**rtp_record("x"), "prompt": {"toxicity": 0.2}}, "prompt.text", "missing"),
        (rtp_record("   "), "prompt.text", "empty"),
        (rtp_record("fine", toxicity="high"), "prompt.toxicity",
         "expected a Perspective probability in [0, 1] or null, got 'high'"),
        ({**rtp_record("x"), "prompt": "just text"}, "prompt", "expected an object"),
    ],
)
def test_bad_records_name_the_file_line_and_field(tmp_path: Path, record: dict, field: str, problem: str) -> None:
    path = write_jsonl(tmp_path / "rtp.jsonl.gz", [rtp_record("a good one"), record], gz=True)
    with pytest.raises(DataError, match=f"rtp.jsonl.gz, line 2, field '{field}'") as caught:
        read_rtp(str(path))
    assert problem in str(caught.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        read_rtp(str(write_jsonl(tmp_path / "empty.jsonl", [])))
