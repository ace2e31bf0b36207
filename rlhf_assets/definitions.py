"""The rlhf-assets code location: the shared graph merged with one suite per policy (`policy_suites.py`)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor, load_assets_from_modules

from rlhf_assets.assets import (
    comparison,
    data,
    policy_evaluation,
    prompt_sets,
    snapshots,
    toxicity_inputs,
    training,
)
from rlhf_assets.assets.human_eval import WAITS_FOR_PEOPLE
from rlhf_assets.assets.policy_evaluation import POLICIES
from rlhf_assets.automation import (
    build_evaluation_schedule,
    collect_human_eval,
    evaluate_latest_policy,
    orphaned_training_jobs,
)
from rlhf_assets.checks import shared_checks
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.policy_suites import policy_suite
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, ManifestIOManager, PresetResource

# The graph every policy shares: data, models, SFT's samples, the toxicity inputs, prompt sets, the comparison.
shared_assets = load_assets_from_modules([snapshots, data, training, toxicity_inputs, prompt_sets, policy_evaluation,
                                          comparison])
suites = [policy_suite(policy) for policy in POLICIES]

# Each policy's `human_eval_results` waits for people: its labels-complete sensor requests it when labels exist.
materialize_all = define_asset_job(
    "materialize_all", selection=AssetSelection.all() - AssetSelection.tag(*WAITS_FOR_PEOPLE),
    description="Every asset of the graph in lineage order, up to the human-eval tasks (results follow the labels).",
)

# Heavy work runs in step subprocesses (or SageMaker jobs), so each run executes its assets in one process:
# no extra interpreter per asset (~3 s each). Runs still queue on the `gpu` pool; a run can choose
# `execution: {config: {multiprocess: {}}}` when it wants parallel branches.
# One Definitions object at module scope (Dagster's CLI loads exactly one): the shared graph merged with the suites.
defs = Definitions.merge(
    Definitions(
        assets=shared_assets,
        asset_checks=shared_checks,
        jobs=[materialize_all, evaluate_latest_policy, collect_human_eval],
        schedules=[build_evaluation_schedule()],
        sensors=[orphaned_training_jobs],
        executor=in_process_executor,
        resources={
            "preset": PresetResource(),
            "io_manager": ManifestIOManager(),
            "artifacts": ArtifactStoreResource(),
            "compute": ComputeBackend(local=LocalComputeBackend(), sagemaker=SageMakerComputeBackend()),
            "labeling": LabelingResource(),
        },
    ),
    *suites,
)

# For tests and scripts that materialize the graph with Dagster's API: every asset and every check.
all_assets = [*shared_assets, *(asset for suite in suites for asset in suite.assets or ())]
all_checks = [*shared_checks, *(check for suite in suites for check in suite.asset_checks or ())]
