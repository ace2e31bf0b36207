from pathlib import Path

import pytest

from rlhf_assets.data.hh import DataError, RawRecord, read_jsonl, split_dialogue, to_preference_pairs
from tests.conftest import hh_row, write_jsonl

pytestmark = pytest.mark.unit


def test_split_dialogue_cuts_at_last_assistant_turn() -> None:
    dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this"
    prompt, response = split_dialogue(dialogue)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:"
    assert response == " like this"


def test_real_hh_file_maps_to_rm_static_with_irregular_rows_dropped(shared_hh_path: Path) -> None:
    pairs, report = to_preference_pairs(read_jsonl(shared_hh_path), str(shared_hh_path))
    assert report.kept == len(pairs) == 2312 - 9
    assert report.dropped == {"dialogues_differ_before_last_turn": 5, "empty_chosen": 4}
    assert report.examples["empty_chosen"] == [87, 517, 926, 1104]
    first = pairs[0]
    assert first.prompt.startswith("\n\nHuman: what are some pranks with a pen")
    assert first.prompt.endswith("\n\nAssistant:")
    assert first.as_row()["response"] == first.chosen
    assert all(p.chosen.strip() and p.rejected.strip() for p in pairs)


def test_rm_static_rows_pass_through_and_duplicates_drop() -> None:
    row = {"prompt": "\n\nHuman: q\n\nAssistant:", "response": " a", "chosen": " a", "rejected": " b"}
    records = [RawRecord(1, row), RawRecord(2, dict(row)), RawRecord(3, {**row, "rejected": " a"})]
    pairs, report = to_preference_pairs(records, "mem")
    assert [p.source_line for p in pairs] == [1]
    assert report.dropped == {"duplicate_row": 1, "chosen_equals_rejected": 1}


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [hh_row("a", "b", "c"), {"chosen": "\n\nHuman: x\n\nAssistant: y"}])
    with pytest.raises(DataError, match=r"d\.jsonl, line 2, field 'rejected': missing"):
        to_preference_pairs(read_jsonl(path), str(path))


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"chosen": 3, "rejected": "x"}])
    with pytest.raises(DataError, match=r"line 1, field 'chosen': expected a string, got int"):
        to_preference_pairs(read_jsonl(path), str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"chosen": "a", "rejected": "b"}\n{"chosen": "a", "rej', r"d\.jsonl, line 2: malformed JSON"),
        (b'{"chosen": "a", "rejected": "\xff\xfe"}\n', r"line 1: not valid UTF-8"),
        (b"[1, 2]\n", r"line 1: expected a JSON object, got list"),
        (b"", r"d\.jsonl: file is empty"),
    ],
)
def test_bad_lines_fail_with_line_numbers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(read_jsonl(path))


def test_truncated_gzip_is_reported(tmp_path: Path, shared_hh_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(shared_hh_path.read_bytes()[:20_000])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz, line \d+: gzip stream is corrupt or truncated"):
        list(read_jsonl(path))


def test_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file does not exist"):
        list(read_jsonl(tmp_path / "nope.jsonl"))
