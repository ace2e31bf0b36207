"""The code location's deployment settings: read from the environment once, when Dagster loads the code location.

Three settings change which definitions exist, so they cannot wait for a run the way a resource's settings do:
whether failed checks block downstream assets (`RLHF_BLOCKING_CHECKS`), the re-evaluation schedule's cron
(`RLHF_EVAL_CRON`) and the declared prompt sets (`RLHF_PROMPT_SETS`, each gets assets). `definitions.py` reads
them in its `@definitions` function and hands them to each domain's builder; no module reads them on import, so
importing any part of the package (a test, a step, the CLI) never depends on the environment. Everything a run
can resolve later (the preset, the artifact root, the compute backend, SageMaker and Ground Truth settings) is a
resource field instead (`resources.py`, `compute/`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rlhf_assets.data.prompt_sets import PromptSetSpec, load_prompt_sets
from rlhf_assets.presets import PROJECT_ROOT

DEFAULT_CRON = "0 3 * * *"


def prompt_sets_file(environ: Mapping[str, str] = os.environ) -> Path:
    """`RLHF_PROMPT_SETS`, or `prompt_sets.yaml` in the project."""
    return Path(environ.get("RLHF_PROMPT_SETS", str(PROJECT_ROOT / "prompt_sets.yaml")))


class DeploymentSettings(BaseModel):
    """What the code location is built with; `from_environment` is the one place these are read."""

    model_config = ConfigDict(frozen=True)

    blocking_checks: bool = Field(True, description="A failed check stops its run before downstream assets "
                                                    "(RLHF_BLOCKING_CHECKS=0 turns that off)")
    eval_cron: str = Field(DEFAULT_CRON, description="Cron of scheduled_evaluation, UTC (RLHF_EVAL_CRON)")
    prompt_sets: tuple[PromptSetSpec, ...] = Field((), description="Declared prompt sets (RLHF_PROMPT_SETS)")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> DeploymentSettings:
        """The settings the environment gives; a bad prompt-set file fails here, naming the file and entry."""
        return cls(blocking_checks=environ.get("RLHF_BLOCKING_CHECKS", "1") != "0",
                   eval_cron=environ.get("RLHF_EVAL_CRON", DEFAULT_CRON),
                   prompt_sets=load_prompt_sets(prompt_sets_file(environ)))

    @property
    def prompt_set_names(self) -> tuple[str, ...]:
        """The declared prompt sets' names, in declaration order (RealToxicityPrompts is not one of them)."""
        return tuple(spec.name for spec in self.prompt_sets)
