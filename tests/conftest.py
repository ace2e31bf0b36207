"""Shared fixtures (the real HH data from ../shared, skipped with a reason when absent; isolated stores; the tiny
graph built once per session) and the test tiers.

Tests live in one folder per tier, and every module says its tier with `pytestmark` (`pyproject.toml` describes
them): `unit` (seconds, the everyday loop), `process` (step programs, CLIs, local servers), `graph` (the tiny asset
graph), `aws` (moto and the SageMaker toolkit), `browser` (Chromium). Collection fails when a test lacks its
folder's marker, or uses the `graph` / `aws` fixtures without saying so, so `-m` selections stay honest.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _pytest.nodeid import NodeId
from dagster import AssetKey, DagsterInstance, instance_for_test, materialize
from upath import UPath

from rlhf_assets.artifact_files import COMPLETE_MARKER
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.compute.warm.protocol import DIR_ENV, stop_workers
from rlhf_assets.definitions import build_definitions, materialize_all
from rlhf_assets.miniature.mirror import build_hub_mirror
from rlhf_assets.presets import SHARED_HH_PATH, SHARED_RTP_DIR
from rlhf_assets.resources import (
    ArtifactStoreResource,
    LabelingResource,
    ManifestIOManager,
    PresetResource,
    recorded_manifest,
)
from rlhf_assets.settings import DeploymentSettings
from rlhf_assets.storage import ArtifactStore, Manifest
from tests.moto_aws import aws  # noqa: F401  (the moto-server fixture, shared by the AWS tests)

# The code location as Dagster loads it, with this environment's deployment settings.
SETTINGS = DeploymentSettings.from_environment()
DEFINITIONS = build_definitions(SETTINGS)
all_assets = list(DEFINITIONS.assets or ())
all_checks = list(DEFINITIONS.asset_checks or ())

TIERS = ("unit", "process", "graph", "aws", "service", "browser")
FIXTURE_TIERS = {"graph": "graph", "aws": "aws"}  # a test using the fixture needs the tier's marker

# The work units that take longest (the `--durations` report of a whole run), handed out first: the workers take
# units in collection order (`--no-loadscope-reorder`; xdist's default orders units by their number of tests,
# which puts the 3-test recipe, minutes long, behind dozens of short modules, where it can end the run alone).
LONGEST_FIRST = ("tiny-graph", "tests.aws.test_miniature_recipe", "tests.service.test_deployment",
                 "tests.graph.test_reproducibility",
                 "tests.graph.test_operations", "tests.graph.test_miniature", "tests.process.test_ppo_distributed",
                 "tests.aws.test_sagemaker", "tests.graph.test_crash_consistency")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the work units (`xdist_group`) off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test whose markers do not say what it needs (its folder's tier, the graph, moto); mark each test's
    work unit for the workers."""
    problems = []
    for item in items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        folder = item.path.parent.name
        if folder not in TIERS:
            problems.append(f"{item.nodeid}: tests live in a tier folder (tests/{{{','.join(TIERS)}}}/)")
        elif folder not in tiers:
            problems.append(f"{item.nodeid}: its module has no `pytestmark = pytest.mark.{folder}`")
        problems += [f"{item.nodeid}: uses the `{fixture}` fixture without the `{tier}` marker"
                     for fixture, tier in FIXTURE_TIERS.items() if fixture in item.fixturenames and tier not in tiers]
    if problems:
        raise pytest.UsageError("tests without the tier markers they need:\n" + "\n".join(problems))
    if getattr(config.option, "loadgroup", False):  # a pytest-xdist worker under `--dist loadgroup`
        for item in items:
            _group(item, _work_unit(item))
        rank = {unit: position for position, unit in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_work_unit(item), len(rank)))  # stable: the rest keep their order



def _group(item: pytest.Item, unit: str) -> None:
    """Put `item` in work unit `unit`. pytest-xdist 3.8 marks a group by appending `@unit` to `item._nodeid`, which
    pytest 9 no longer reads (the id lives in `item._id`), so every test would be scheduled alone; the suffix is
    set where pytest 9 reads it."""
    item.add_marker(pytest.mark.xdist_group(unit))
    item._id = NodeId.parse(f"{item.nodeid}@{unit}")


def _work_unit(item: pytest.Item) -> str:
    """What runs together in one worker when the suite is spread over processes (`-n 2 --dist loadgroup`): every
    test on the shared tiny graph (built once, in that worker; some read what an earlier one materialized), and
    otherwise a module (its module-scoped fixtures, e.g. the recipe's miniature graph, are then built once)."""
    return "tiny-graph" if "graph" in item.fixturenames else item.module.__name__


TIER_SECONDS: dict[str, float] = dict.fromkeys(TIERS, 0.0)
TIER_TESTS: dict[str, set[str]] = {tier: set() for tier in TIERS}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each phase (set-up, call, tear-down) to its folder's tier: a session fixture counts where it is built."""
    tier = Path(report.fspath).parent.name
    if tier in TIER_SECONDS:
        TIER_SECONDS[tier] += report.duration
        TIER_TESTS[tier].add(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Time per tier, so the cost of each tier is seen in every run (CI's included)."""
    ran = [tier for tier in TIERS if TIER_TESTS[tier]]
    if ran:
        terminalreporter.write_sep("-", "time per tier")
        for tier in ran:
            terminalreporter.write_line(f"{tier:<8} {TIER_SECONDS[tier]:7.1f} s  {len(TIER_TESTS[tier]):4d} tests")


@pytest.fixture(scope="session", autouse=True)
def warm_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's own warm step workers (started by the first local step), stopped when the session ends."""
    directory = tmp_path_factory.mktemp("warm-workers")
    os.environ[DIR_ENV] = str(directory)
    yield directory
    stop_workers(directory)


@pytest.fixture(scope="session")
def shared_hh_path() -> Path:
    if not SHARED_HH_PATH.exists():
        pytest.skip(f"real HH data not found at {SHARED_HH_PATH} (../shared/data is provided in CI)")
    return SHARED_HH_PATH


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory: pytest.TempPathFactory, shared_hh_path: Path) -> Path:
    """The local hub mirror (rlhf_assets.miniature.mirror), built once per session from the shared data."""
    root = tmp_path_factory.mktemp("hub-mirror")
    build_hub_mirror(root, hh_source=shared_hh_path, rtp_dir=SHARED_RTP_DIR, log=lambda _line: None)
    return root


def write_jsonl(path: Path, rows: list[object], *, gz: bool = False) -> Path:
    """Write rows (dicts, or raw strings written verbatim) as JSON Lines."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def hh_row(prompt_turn: str, chosen: str, rejected: str) -> dict[str, str]:
    """One HH-format row whose dialogues share the prompt and differ in the last Assistant turn."""
    prefix = f"\n\nHuman: {prompt_turn}\n\nAssistant:"
    return {"chosen": prefix + " " + chosen, "rejected": prefix + " " + rejected}


def graph_resources(root: Path) -> dict:
    """Resources writing everything under `root` (artifacts, manifests, scratch)."""
    return {
        "preset": PresetResource(),
        "io_manager": ManifestIOManager(base_dir=str(root / "artifacts" / "manifests")),
        "artifacts": ArtifactStoreResource(root=str(root / "artifacts")),
        "compute": ComputeBackend(local=LocalComputeBackend(scratch_dir=str(root / "scratch")),
                                  sagemaker=SageMakerComputeBackend()),
        "labeling": LabelingResource(db_path=str(root / "labeling" / "labels.sqlite")),
    }


def manifest_of(instance: DagsterInstance, root: Path, asset: str) -> Manifest:
    """The manifest of `asset`'s latest materialization recorded in `instance` (what downstream steps read)."""
    return recorded_manifest(instance, AssetKey.from_user_string(asset), str(root / "artifacts" / "manifests"))


def artifact_dir(instance: DagsterInstance, root: Path, asset: str) -> Path:
    """The verified local directory of `asset`'s latest recorded artifact under `root`."""
    return ArtifactStore(str(root / "artifacts")).local_path(manifest_of(instance, root, asset).uri)


@contextmanager
def project_instance(root: Path) -> Iterator[DagsterInstance]:
    """The Dagster instance of a project under `root` (`root/dagster_home`), kept beside its artifacts."""
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    with instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
        yield instance


@contextmanager
def forked_project(root: Path, target: Path) -> Iterator[DagsterInstance]:
    """A copy of a project's artifacts and Dagster instance at `target`, opened as its own instance: tests
    change the copy without touching the shared graph (and show that a copied project reads its own files)."""
    shutil.copytree(root / "artifacts", target / "artifacts", dirs_exist_ok=True)
    shutil.copytree(root / "dagster_home", target / "dagster_home", dirs_exist_ok=True)
    with project_instance(target) as instance:
        yield instance


DATA_SNAPSHOTS = [AssetKey(["hub_snapshots", "preference_data"]), AssetKey(["hub_snapshots", "toxicity_prompts"])]
UPSTREAM = ("hub_snapshots/preference_data", "hub_snapshots/base_model", "hh_raw", "preference_dataset",
            "base_model")  # the SFT step's inputs


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory, shared_hh_path: Path, worker_id: str,
             testrun_uid: str) -> Path:
    """A project with `hh_raw → preference_dataset → base_model` materialized once per session on the tiny preset.

    Tests whose subject is a later step (SFT on SageMaker, under IAM, through the toolkit, killed or run twice)
    start from a copy of it (`copy_project`, `publish_project`) instead of building the chain again. Under
    pytest-xdist the workers share one build: the first to need it builds it under a lock in the session's common
    temporary folder, the others wait for it and read it.
    """
    if worker_id == "master":
        return _build_upstream(tmp_path_factory.mktemp("upstream"))
    shared = tmp_path_factory.getbasetemp().parent  # the folder above every worker's own
    root = shared / f"upstream-{testrun_uid}"  # this run's: a `--basetemp` folder may hold an older run's
    with open(shared / f"upstream-{testrun_uid}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "built").exists():
            shutil.rmtree(root, ignore_errors=True)
            _build_upstream(root)
            (root / "built").touch()
    return root


def _build_upstream(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with project_instance(root) as instance:
        assert materialize(all_assets, selection=[AssetKey.from_user_string(name) for name in UPSTREAM],
                           resources=graph_resources(root), instance=instance).success
    return root


def copy_project(source: Path, artifacts: Path, dagster_home: Path) -> None:
    """Copy a project's artifact root and Dagster instance to the given places (e.g. where a CLI run's
    `RLHF_ARTIFACT_ROOT` and `DAGSTER_HOME` point)."""
    shutil.copytree(source / "artifacts", artifacts, dirs_exist_ok=True)
    shutil.copytree(source / "dagster_home", dagster_home, dirs_exist_ok=True)


def publish_project(source: Path, root: str, dagster_home: Path) -> None:
    """A project's artifacts and manifests published under another artifact root (an s3:// prefix), through the
    store's own publishing, and its Dagster instance copied to `dagster_home`: the recorded materializations name
    manifests and artifacts relative to the root, so they resolve in the new root."""
    store = ArtifactStore(root)
    artifacts = source / "artifacts"
    for directory in sorted(p for p in artifacts.glob("*/*") if p.is_dir() and p.parent.name != "manifests"):
        with tempfile.TemporaryDirectory() as staging:
            staged = shutil.copytree(directory, Path(staging) / directory.name,
                                     ignore=shutil.ignore_patterns(COMPLETE_MARKER))
            uri = store.publish_directory(staged, directory.parent.name)[0]
        assert uri == f"{directory.parent.name}/{directory.name}", "the same bytes publish under the same name"
    for manifest in sorted(p for p in (artifacts / "manifests").rglob("*") if p.is_file()):
        (UPath(root) / "manifests" / manifest.relative_to(artifacts / "manifests").as_posix()).write_bytes(
            manifest.read_bytes())
    shutil.copytree(source / "dagster_home", dagster_home, dirs_exist_ok=True)


@pytest.fixture(scope="session")
def graph(tmp_path_factory, shared_hh_path: Path):
    """The whole graph and its checks materialized once on the tiny preset with the full shared data.

    Everything the main job materializes: all but `human_eval_results`, which waits for labels
    (`tests/graph/test_human_eval_graph.py` labels the tasks and collects the results).
    """
    root = tmp_path_factory.mktemp("graph")
    with project_instance(root) as instance:
        result = materialize([*all_assets, *all_checks], resources=graph_resources(root), instance=instance,
                             selection=materialize_all.selection)
        assert result.success
        yield root, instance, result
