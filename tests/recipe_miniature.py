"""The `gptj_6b` miniature through the SageMaker backend, as a program: `python -m tests.recipe_miniature OUT`.

Its 22 jobs run one after another through the real toolkit (about 5 minutes here, mostly process start-up and
waiting), so the test session starts this program as soon as `tests/aws/test_miniature_recipe.py` is collected
(`tests/conftest.py`) and it overlaps the rest of the suite on the machine's second core. It brings its own moto
server and hub mirror and writes what the test checks to `OUT/result.json`: the job requests, their exit codes and
output, the run's Dagster log and the reward model's metadata.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
from dagster import AssetKey, AssetSelection, materialize
from moto.server import ThreadedMotoServer

from rlhf_assets.assets.human_eval import WAITS_FOR_PEOPLE
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.definitions import all_assets
from rlhf_assets.miniature.mirror import build_hub_mirror, mirror_environment
from rlhf_assets.presets import SHARED_HH_PATH, SHARED_RTP_DIR
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, ManifestIOManager, PresetResource
from tests.conftest import project_instance
from tests.moto_aws import BUCKET, SECRET
from tests.sagemaker_platform import SageMakerPlatform

ROLE = "arn:aws:iam::123456789012:role/rlhf-sagemaker"
RESULT_FILE = "result.json"


def _resources(root: Path) -> dict[str, Any]:
    store = f"s3://{BUCKET}/recipe"
    sagemaker = SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET, poll_interval_seconds=0.2,
                                        message_interval_seconds=0.5)
    return {"preset": PresetResource(name="gptj_6b", miniature=True),
            "io_manager": ManifestIOManager(base_dir=f"{store}/manifests"),
            "artifacts": ArtifactStoreResource(root=store),
            "compute": ComputeBackend(local=LocalComputeBackend(scratch_dir=str(root / "scratch")),
                                      sagemaker=sagemaker),
            "labeling": LabelingResource(db_path=str(root / "labels.sqlite"))}


def run(root: Path) -> dict[str, Any]:
    """Materialize the whole graph (but what waits for people) and describe what happened."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "AKIATESTKEY",
                       "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        boto3.setup_default_session()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        mirror = root / "hub-mirror"
        build_hub_mirror(mirror, hh_source=SHARED_HH_PATH, rtp_dir=SHARED_RTP_DIR, log=print)
        selection = AssetSelection.all() - AssetSelection.tag(*WAITS_FOR_PEOPLE)
        with SageMakerPlatform(root / "container", outside=mirror_environment(mirror)) as platform, \
                project_instance(root / "project") as instance:
            result = materialize(all_assets, selection=selection, resources=_resources(root), instance=instance,
                                 raise_on_error=False)
            logs = "\n".join(str(entry.user_message) for entry in instance.all_logs(result.run_id))
            reward = instance.get_latest_materialization_event(AssetKey("reward_model"))
            metadata = {key: str(value.value) for key, value in reward.asset_materialization.metadata.items()} \
                if reward else {}
            return {"success": result.success, "requests": platform.requests, "exit_codes": platform.exit_codes,
                    "job_logs": [log[-3000:] for log in platform.logs], "logs": logs, "reward_metadata": metadata}
    finally:
        server.stop()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps(run(out)))
