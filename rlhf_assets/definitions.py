"""The rlhf-assets code location: each domain's definitions merged with one suite per policy.

The domains live under `defs/` (data, models, evaluation, human evaluation, comparison), each with its assets,
checks and automation and a `definitions.py` that builds them; `defs/policy_suite.py` builds one policy's whole
suite. Dagster calls `defs` when it loads the code location (`@definitions`), which is when the deployment settings
are read (`settings.py`): importing this module reads nothing from the environment.
"""

import functools

from dagster import AssetSelection, Definitions, define_asset_job, definitions, in_process_executor

from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.defs.comparison.definitions import comparison_definitions
from rlhf_assets.defs.data.definitions import data_definitions
from rlhf_assets.defs.evaluation.definitions import evaluation_definitions
from rlhf_assets.defs.evaluation.suite import POLICIES
from rlhf_assets.defs.human_eval.assets import WAITS_FOR_PEOPLE
from rlhf_assets.defs.human_eval.definitions import human_eval_definitions
from rlhf_assets.defs.models.definitions import model_definitions
from rlhf_assets.defs.policy_suite import policy_suite
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, ManifestIOManager, PresetResource
from rlhf_assets.settings import DeploymentSettings

# Each policy's `human_eval_results` waits for people: its labels-complete sensor requests it when labels exist.
materialize_all = define_asset_job(
    "materialize_all", selection=AssetSelection.all() - AssetSelection.tag(*WAITS_FOR_PEOPLE),
    description="Every asset of the graph in lineage order, up to the human-eval tasks (results follow the labels).",
)


@functools.cache
def graph_definitions(settings: DeploymentSettings) -> Definitions:
    """The domains and one suite per policy for `settings`: built once per distinct settings, as Dagster calls
    `defs` several times per process (seven for one `dagster asset materialize`)."""
    return Definitions.merge(
        data_definitions(settings),
        model_definitions(settings),
        evaluation_definitions(settings),
        human_eval_definitions(),
        comparison_definitions(settings),
        *(policy_suite(policy, settings) for policy in POLICIES),
    )


def build_definitions(settings: DeploymentSettings) -> Definitions:
    """The whole code location for `settings`: the graph, the main job and the resources (whose defaults come from
    the environment as they are built: the preset, the artifact root, the compute backend...).

    Heavy work runs in step subprocesses (or SageMaker jobs), so each run executes its assets in one process: no
    extra interpreter per asset (~3 s each). Runs still queue on the `gpu` pool; a run can choose
    `execution: {config: {multiprocess: {}}}` when it wants parallel branches."""
    return Definitions.merge(
        graph_definitions(settings),
        Definitions(
            jobs=[materialize_all],
            executor=in_process_executor,
            resources={
                "preset": PresetResource(),
                "io_manager": ManifestIOManager(),
                "artifacts": ArtifactStoreResource(),
                "compute": ComputeBackend(local=LocalComputeBackend(), sagemaker=SageMakerComputeBackend()),
                "labeling": LabelingResource(),
            },
        ),
    )


@definitions
def defs() -> Definitions:
    """What Dagster loads (`dagster dev`, `dagster asset materialize -m rlhf_assets.definitions`); the settings are
    read at each call (under a millisecond), the graph is built once per distinct settings."""
    return build_definitions(DeploymentSettings.from_environment())
