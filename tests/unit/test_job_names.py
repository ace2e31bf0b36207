"""SageMaker job names: valid and distinct for every asset key, every prompt-set name and every retry."""

import re
import uuid

import botocore.session
import pytest

from rlhf_assets.compute.sagemaker.jobs import JobIdentity, work_key
from tests.conftest import DEFINITIONS

pytestmark = pytest.mark.unit

# The declared set, a one-letter name, the 40-character maximum of PromptSetSpec.name, and names that agree on
# more characters than a job name has room for.
PROMPT_SETS = ["red_team", "a", "x" * 11, "z" * 40, "toxicity_benchmark_from_the_safety_team_1",
               "toxicity_benchmark_from_the_safety_team_2"]


def _asset_names() -> set[str]:
    declared = [key.to_python_identifier() for key in DEFINITIONS.resolve_asset_graph().get_all_asset_keys()]
    return {name.replace("red_team", prompt_set) for name in declared for prompt_set in PROMPT_SETS}


def test_every_job_name_is_valid_and_distinct() -> None:
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrainingJobName")
    pattern, limit = shape.metadata["pattern"], shape.metadata["max"]
    runs = [str(uuid.UUID(int=n << 96)) for n in (0x0A1B2C3D, 0x9F8E7D6C)]  # Dagster run ids: uuid4
    names = {}
    for asset in _asset_names():
        work = work_key(asset, {"step": "any", "config": {}, "inputs": {}})
        for run_id in runs:
            for attempt in range(13):
                name = JobIdentity(asset, work, run_id, attempt).name
                assert len(name) <= limit and re.fullmatch(pattern, name), name
                assert name not in names, f"{asset} and {names.get(name)} share {name}"
                names[name] = asset
    assert len(names) == len(_asset_names()) * len(runs) * 13 > 1000
