"""The artifact store and manifest IO manager on S3, against a real local moto server (AWS is out of reach)."""

from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import s3fs
from dagster import AssetKey, instance_for_test, materialize
from moto.server import ThreadedMotoServer

from rlhf_assets.artifact_files import ArtifactIntegrityError, OutputDescription
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.resources import ArtifactStoreResource, ManifestIOManager, PresetResource, recorded_manifest
from rlhf_assets.storage import ArtifactStore, ArtifactStoreError, Manifest
from tests.conftest import DATA_SNAPSHOTS, all_assets

pytestmark = pytest.mark.aws


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    """One server per module: s3fs caches filesystem objects per process, endpoint included."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()  # a filesystem cached by an earlier module has its endpoint
        boto3.client("s3").create_bucket(Bucket="rlhf-test")
        yield "rlhf-test"
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_publish_and_download_round_trip(s3_bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights")
    (source / "sub" / "tokenizer.json").write_text("{}")
    store = ArtifactStore(f"s3://{s3_bucket}/root")
    uri, content_hash, files = store.publish_directory(source, "sft_model")
    assert uri.startswith("sft_model/") and store.is_complete(uri)
    assert store.resolve(uri) == f"s3://{s3_bucket}/root/{uri}"
    assert store.publish_directory(source, "sft_model")[0] == uri
    local = store.local_path(uri, tmp_path / "cache")
    assert (local / "model.safetensors").read_bytes() == b"weights"
    assert (local / "sub" / "tokenizer.json").read_text() == "{}"


def test_an_incomplete_s3_artifact_is_overwritten_and_completed(s3_bucket: str, tmp_path: Path) -> None:
    """Issue 15 (4): a prefix left without `_COMPLETE` is completed by the next publish, stray files removed."""
    source = tmp_path / "model"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"weights")
    store = ArtifactStore(f"s3://{s3_bucket}/repair")
    uri, _, _ = store.publish_directory(source, "sft_model")
    key = f"repair/{uri}"
    s3 = boto3.client("s3")
    s3.delete_object(Bucket=s3_bucket, Key=f"{key}/_COMPLETE")
    s3.put_object(Bucket=s3_bucket, Key=f"{key}/model.safetensors", Body=b"half")
    s3.put_object(Bucket=s3_bucket, Key=f"{key}/stray.bin", Body=b"left by a crash")
    s3fs.S3FileSystem.clear_instance_cache()
    store = ArtifactStore(f"s3://{s3_bucket}/repair")
    assert not store.is_complete(uri)
    assert store.publish_directory(source, "sft_model")[0] == uri and store.is_complete(uri)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=key)["Contents"])
    assert keys == [f"{key}/_COMPLETE", f"{key}/model.safetensors"]
    assert s3.get_object(Bucket=s3_bucket, Key=f"{key}/model.safetensors")["Body"].read() == b"weights"


def test_a_rewritten_s3_object_is_caught_from_the_listing_and_repaired(s3_bucket: str, tmp_path: Path) -> None:
    """A same-size rewrite changes the object's ETag: the reuse/publish check sees it without downloading, the
    next read re-hashes and refuses it, and publishing the same content again repairs it."""
    source = tmp_path / "model"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"weights")
    store = ArtifactStore(f"s3://{s3_bucket}/etag")
    uri, _, _ = store.publish_directory(source, "sft_model")
    assert store.problem(uri) is None
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key=f"etag/{uri}/model.safetensors", Body=b"WEIGHTS")  # same size
    s3fs.S3FileSystem.clear_instance_cache()
    store = ArtifactStore(f"s3://{s3_bucket}/etag")
    assert "model.safetensors was rewritten after publishing (ETag" in store.problem(uri)
    with pytest.raises(ArtifactIntegrityError, match="model.safetensors hashes to"):
        store.local_path(uri, tmp_path / "cache")
    s3.put_object(Bucket=s3_bucket, Key=f"etag/{uri}/extra.py", Body=b"import os")
    s3fs.S3FileSystem.clear_instance_cache()
    store = ArtifactStore(f"s3://{s3_bucket}/etag")
    assert store.publish_directory(source, "sft_model")[0] == uri
    assert store.problem(uri) is None
    assert (store.local_path(uri, tmp_path / "cache") / "model.safetensors").read_bytes() == b"weights"


def test_an_s3_output_is_adopted_by_server_side_copy_only_when_every_size_matches(s3_bucket: str,
                                                                                 tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="jobs/j1/output/model/model.safetensors", Body=b"weights")
    source = f"s3://{s3_bucket}/jobs/j1/output/model"
    store = ArtifactStore(f"s3://{s3_bucket}/root")
    truncated = OutputDescription(content_hash="a" * 64, sizes={"model.safetensors": 9})
    with pytest.raises(ArtifactStoreError, match="7 bytes arrived, the step described 9"):
        store.publish_output(source, "sft_model", truncated)
    assert not store.is_complete(f"s3://{s3_bucket}/root/sft_model/{'a' * 16}")
    whole = OutputDescription(content_hash="b" * 64, sizes={"model.safetensors": 7})
    uri, _, files = store.publish_output(source, "sft_model", whole)
    assert store.is_complete(uri) and files == ["model.safetensors"]
    assert s3.get_object(Bucket=s3_bucket, Key="root/sft_model/bbbbbbbbbbbbbbbb/model.safetensors")["Body"].read() \
        == b"weights"


def test_data_assets_materialize_into_s3(s3_bucket: str, tmp_path: Path, shared_hh_path: Path) -> None:
    root = f"s3://{s3_bucket}/rlhf"
    resources = {
        "preset": PresetResource(),
        "io_manager": ManifestIOManager(base_dir=f"{root}/manifests"),
        "artifacts": ArtifactStoreResource(root=root),
        "compute": ComputeBackend(local=LocalComputeBackend(scratch_dir=str(tmp_path / "scratch")),
                                  sagemaker=SageMakerComputeBackend()),
    }
    selected = [a for a in all_assets if a.key.path[0] in ("hh_raw", "preference_dataset", "eval_prompts")
                or a.key in DATA_SNAPSHOTS]
    with instance_for_test() as instance:
        assert materialize(selected, resources=resources, instance=instance).success
        event = instance.get_latest_materialization_event(AssetKey("eval_prompts"))
        manifest = recorded_manifest(instance, AssetKey("eval_prompts"), f"{root}/manifests")
    objects = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="rlhf/manifests/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[0] for o in objects if "hub_snapshots" not in o["Key"]) == [
        f"rlhf/manifests/{n}" for n in ("eval_prompts", "hh_raw", "preference_dataset")]
    name = event.asset_materialization.metadata["manifest"].value
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"rlhf/manifests/{name}")["Body"].read()
    assert Manifest.model_validate_json(body) == manifest
    assert manifest.uri.startswith("eval_prompts/")
    assert event.asset_materialization.tags["dagster/data_version"] == manifest.content_hash
    frame = pd.read_parquet(ArtifactStore(root).local_path(manifest.uri, tmp_path / "cache") / "eval_prompts.parquet")
    assert len(frame) == 100
