"""The human eval domain as one `Definitions` (kept out of the package's `__init__`, so an asset's code
version does not cover its domain's checks, sensors or settings)."""

from dagster import Definitions

from rlhf_assets.defs.human_eval.automation import collect_human_eval


def human_eval_definitions() -> Definitions:
    """The job every policy's labels-complete sensor requests."""
    return Definitions(jobs=[collect_human_eval])
