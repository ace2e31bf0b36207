"""The sampling record of SFT's shared samples: what a policy's step compares with its own settings."""

from pathlib import Path

import pytest

from rlhf_assets.presets import TINY
from rlhf_assets.steps.runtime import StepInputError
from rlhf_assets.steps.sft_baseline import check_sampling_record, write_sampling_record

pytestmark = pytest.mark.unit


def test_the_same_settings_pass_and_each_differing_field_is_named(tmp_path: Path) -> None:
    drawn = TINY.evaluation.generation.model_dump(mode="json")
    write_sampling_record(tmp_path, drawn)
    check_sampling_record(tmp_path, dict(drawn), "sft_model/eval_responses")
    other = {**drawn, "seed": 3, "top_p": 0.5}
    with pytest.raises(StepInputError, match=r"seed: SFT sampled with 0, this evaluation with 3; top_p: SFT sampled "
                                             r"with 1\.0, this evaluation with 0\.5"):
        check_sampling_record(tmp_path, other, "sft_model/eval_responses")


def test_nested_settings_name_their_path_and_a_missing_record_is_bad_input(tmp_path: Path) -> None:
    write_sampling_record(tmp_path, {"generation": {"seed": 0}, "samples_per_prompt": 2})
    with pytest.raises(StepInputError, match="generation.seed: SFT sampled with 0, this evaluation with 1"):
        check_sampling_record(tmp_path, {"generation": {"seed": 1}, "samples_per_prompt": 2}, "sft_model/x")
    with pytest.raises(StepInputError, match="is missing: the channel is not an SFT baseline artifact"):
        check_sampling_record(tmp_path / "elsewhere", {}, "sft_model/x")
