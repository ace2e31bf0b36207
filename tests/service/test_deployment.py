"""Dagster as a team runs it: deploy/dagster/dagster.yaml on a real PostgreSQL server, with a code server, the
webserver and the daemon as separate processes (deploy/dagster/workspace.yaml's shape).

Part of the tiny graph is materialized into the Postgres-backed instance; two runs of a GPU-pool asset are launched
through the webserver's GraphQL API, as the UI's Materialize button does; the second waits in the queue while the
first runs; the daemon is SIGKILLed mid-run and started again; and nothing is lost: both runs succeed with their
whole event logs, the sensors' ticks are stored, and the steps' compute logs are on S3 (the moto server).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import boto3
import pytest
import requests
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, materialize

from rlhf_assets.presets import PROJECT_ROOT
from tests.conftest import UPSTREAM, all_assets, graph_resources
from tests.moto_aws import BUCKET
from tests.postgres import postgres_server
from tests.servers import free_port, wait_until_serving

pytestmark = [pytest.mark.service, pytest.mark.aws]  # moto stands in for S3 (compute logs)

VENV_BIN = Path(sys.executable).parent
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


LOCATION = """
query { workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }"""
RELOAD = """mutation { reloadRepositoryLocation(repositoryLocationName: "rlhf_assets") { __typename } }"""


def _wait_for_location(url: str, timeout: float = 180) -> None:
    """Until the webserver has loaded the code location from the code server (which takes its time to import the
    definitions: until then the webserver records a load error, and is asked to reload)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.post(f"{url}/graphql", json={"query": LOCATION}, timeout=60).json()
        entries = answer["data"]["workspaceOrError"]["locationEntries"]
        if entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
            return
        assert time.monotonic() < deadline, f"the code location did not load: {answer}"
        time.sleep(2)
        requests.post(f"{url}/graphql", json={"query": RELOAD}, timeout=60)


def _launch(url: str, config: dict) -> str:
    """What the launchpad sends for `materialize_all` narrowed to one asset."""
    params = {"selector": {"repositoryLocationName": "rlhf_assets", "repositoryName": "__repository__",
                           "pipelineName": "materialize_all", "assetSelection": [{"path": ["sft_model"]}],
                           "assetCheckSelection": []},
              "runConfigData": config, "mode": "default", "executionMetadata": {"tags": []}}
    answer = requests.post(f"{url}/graphql", json={"query": LAUNCH, "variables": {"executionParams": params}},
                           timeout=60).json()
    launched = answer["data"]["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _status(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def _wait(instance: DagsterInstance, run_id: str, statuses: set[DagsterRunStatus], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _status(instance, run_id) not in statuses:
        assert time.monotonic() < deadline, f"run {run_id} is still {_status(instance, run_id)}"
        time.sleep(0.5)


def test_a_postgres_deployment_queues_gpu_runs_and_loses_nothing_when_its_daemon_dies(
        aws, tmp_path: Path, upstream: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")  # the file as shipped
    shutil.copytree(upstream / "artifacts", tmp_path / "artifacts")  # the upstream steps' results, for reuse
    with ExitStack() as stack:
        database = stack.enter_context(postgres_server())
        env = {**os.environ, **aws, **database, "DAGSTER_HOME": str(home), "RLHF_COMPUTE_LOG_BUCKET": BUCKET,
               "RLHF_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "RLHF_SCRATCH_DIR": str(tmp_path / "scratch"),
               "RLHF_LABELING_DB": str(tmp_path / "labels.sqlite"), "RLHF_PRESET": "tiny"}
        for key, value in {**database, "DAGSTER_HOME": str(home), "RLHF_COMPUTE_LOG_BUCKET": BUCKET}.items():
            monkeypatch.setenv(key, value)
        instance = stack.enter_context(DagsterInstance.get())
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        # Part of the tiny graph, into the Postgres-backed instance (the steps reuse the session's results).
        upstream_run = materialize(all_assets, selection=[AssetKey.from_user_string(a) for a in UPSTREAM],
                                   resources=graph_resources(tmp_path), instance=instance)
        assert upstream_run.success
        instance.event_log_storage.set_concurrency_slots("gpu", 1)  # as `dagster instance concurrency set gpu 1`

        code_port, web_port = free_port(), free_port()
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(json.dumps({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": code_port, "location_name": "rlhf_assets"}}]}))
        stack.enter_context(_process([str(VENV_BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p",
                                      str(code_port), "-m", "rlhf_assets.definitions"], env, tmp_path / "code.log"))
        web = stack.enter_context(_process([str(VENV_BIN / "dagster-webserver"), "-w", str(workspace), "-h",
                                            "127.0.0.1", "-p", str(web_port)], env, tmp_path / "web.log"))
        url = f"http://127.0.0.1:{web_port}"
        wait_until_serving(f"{url}/server_info", web, tmp_path / "web.log", timeout=180)
        _wait_for_location(url)
        daemon_command = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)]
        daemon = stack.enter_context(_process(daemon_command, env, tmp_path / "daemon.log"))

        # The tiny preset's SFT on 640 of its rows (40 steps): long enough to outlive the checks below; the second
        # run, with the same config, reuses its result.
        config: dict = {"ops": {"sft_model": {"config": {"max_train_rows": 640}}}}
        first = _launch(url, config)
        _wait(instance, first, {DagsterRunStatus.STARTED})
        second = _launch(url, config)
        for _ in range(8):  # the daemon sees it (every 5 s), and holds it: the gpu pool's one slot is taken
            assert _status(instance, second) == DagsterRunStatus.QUEUED
            time.sleep(1)
        assert _status(instance, first) == DagsterRunStatus.STARTED, "the first run was still going"
        os.kill(daemon.pid, signal.SIGKILL)  # the daemon alone: its code server and the run worker live on
        daemon.wait(timeout=30)
        killed_at = time.time()
        _wait(instance, first, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
        assert _status(instance, first) == DagsterRunStatus.SUCCESS, (tmp_path / "code.log").read_text()[-3000:]
        assert _status(instance, second) == DagsterRunStatus.QUEUED, "nothing dequeues without a daemon"
        stack.enter_context(_process(daemon_command, env, tmp_path / "daemon-2.log"))
        _wait(instance, second, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
        assert _status(instance, second) == DagsterRunStatus.SUCCESS, (tmp_path / "daemon-2.log").read_text()[-3000:]

        for run_id in (first, second):
            kinds = [event.dagster_event_type for event in instance.all_logs(run_id) if event.is_dagster_event]
            assert kinds.count(DagsterEventType.STEP_START) == kinds.count(DagsterEventType.STEP_SUCCESS) == 1
            assert {DagsterEventType.RUN_START, DagsterEventType.ASSET_MATERIALIZATION,
                    DagsterEventType.RUN_SUCCESS} <= set(kinds)
            assert DagsterEventType.STEP_FAILURE not in kinds and DagsterEventType.RUN_FAILURE not in kinds
        ended = max(event.timestamp for event in instance.all_logs(first))
        began = min(event.timestamp for event in instance.all_logs(second)
                    if event.dagster_event_type == DagsterEventType.RUN_STARTING)
        assert began > ended, "the second run started only after the first had ended"
        written_after = [event for event in instance.all_logs(first) if event.timestamp > killed_at]
        assert written_after, "the first run's events from after the daemon died are all there"
        logs = "\n".join(str(event.user_message) for event in instance.all_logs(second))
        assert f"reusing the result of run {first}" in logs
        materializations = instance.fetch_materializations(AssetKey("sft_model"), limit=10).records
        assert {record.run_id for record in materializations} == {first, second}
        sensor_ticks = [tick for state in instance.all_instigator_state() for tick in
                        instance.get_ticks(state.instigator_origin_id, state.selector_id)]
        assert sensor_ticks, "the daemon's sensors ran and recorded their ticks in PostgreSQL"
    stored = [item["Key"] for item in boto3.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix="dagster/compute-logs/").get("Contents", [])]
    assert any(first in key for key in stored), "the run's compute logs went to S3"
