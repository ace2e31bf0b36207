"""The hub-dataset path of `hh_raw`, exercised with a local dataset directory in place of a hub id."""

from pathlib import Path

import datasets
import pytest

from rlhf_assets.data.hh import DataError, to_preference_pairs
from rlhf_assets.data.sources import describe_source, iter_source_records
from tests.conftest import hh_row, write_jsonl

pytestmark = pytest.mark.unit

RM_STATIC_ROWS = [
    {"prompt": f"\n\nHuman: question {i}\n\nAssistant:", "response": f" good {i}", "chosen": f" good {i}",
     "rejected": f" bad {i}"}
    for i in range(6)
]


def test_saved_dataset_directory_in_rm_static_format(tmp_path: Path) -> None:
    directory = tmp_path / "rm-static"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(RM_STATIC_ROWS)}).save_to_disk(directory)
    assert describe_source(str(directory)) == "dataset_directory"
    pairs, report = to_preference_pairs(iter_source_records(str(directory), "train"), str(directory))
    assert report.kept == 6
    assert pairs[2].prompt == RM_STATIC_ROWS[2]["prompt"] and pairs[2].rejected == " bad 2"


def test_hub_style_data_directory_in_hh_format(tmp_path: Path) -> None:
    """`load_dataset(<dir>)` is the same call that loads `Anthropic/hh-rlhf` from the hub."""
    directory = tmp_path / "hh-rlhf"
    directory.mkdir()
    write_jsonl(directory / "train.jsonl", [hh_row(f"q{i}", f"yes {i}", f"no {i}") for i in range(4)])
    pairs, _ = to_preference_pairs(iter_source_records(str(directory), "train"), str(directory))
    assert [p.chosen for p in pairs] == [f" yes {i}" for i in range(4)]


def test_unknown_split_and_missing_paths_fail_clearly(tmp_path: Path) -> None:
    directory = tmp_path / "rm-static"
    datasets.Dataset.from_list(RM_STATIC_ROWS).save_to_disk(directory)
    assert len(list(iter_source_records(str(directory), "train"))) == 6
    with pytest.raises(DataError, match="path does not exist"):
        list(iter_source_records(str(tmp_path / "absent"), "train"))
    assert describe_source("Dahoas/rm-static") == "hub_dataset"
