"""Artifact names stay inside their root (issue 15, item 3): manifests name artifacts relative to the artifact
root; `..`, links out of the root and absolute URIs of another root are refused; a copied project reads its own
files, not the original's."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, materialize

from rlhf_assets.artifact_files import ArtifactIntegrityError
from rlhf_assets.storage import ArtifactLocationError, ArtifactStore
from tests.conftest import DATA_SNAPSHOTS, all_assets, artifact_dir, graph_resources, manifest_of, project_instance

pytestmark = pytest.mark.unit


def _published(tmp_path: Path) -> tuple[ArtifactStore, str]:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "rows.txt").write_text("published rows\n")
    store = ArtifactStore(str(tmp_path / "root"))
    return store, store.publish_directory(source, "hh_raw")[0]


def _look_alike(directory: Path) -> Path:
    """A directory that looks like a published artifact (marker and all) but was never published here."""
    directory.mkdir(parents=True)
    (directory / "rows.txt").write_text("planted rows\n")
    (directory / "_COMPLETE").write_text('{"content_hash": "x", "files": ["rows.txt"], "hashes": {}}')
    return directory


def test_a_uri_that_climbs_out_of_the_root_is_refused(tmp_path: Path) -> None:
    """The reproduction: `<root>/../outside` holding a `_COMPLETE` file was read."""
    store, _ = _published(tmp_path)
    _look_alike(tmp_path / "outside")
    for uri in (f"{tmp_path / 'root'}/../outside", "../outside", "hh_raw/../../outside", "hh_raw/./x"):
        with pytest.raises(ArtifactLocationError, match="artifact"):
            store.local_path(uri)
        assert store.problem(uri) is not None, uri


def test_absolute_uris_of_another_root_are_refused_and_names_are_relative(tmp_path: Path) -> None:
    store, uri = _published(tmp_path)
    assert uri.startswith("hh_raw/") and not os.path.isabs(uri)
    assert (store.local_path(uri) / "rows.txt").read_text() == "published rows\n"
    other = _look_alike(tmp_path / "other-root" / "hh_raw" / "0123456789abcdef")
    with pytest.raises(ArtifactLocationError, match="outside this artifact root"):
        store.local_path(str(other))
    with pytest.raises(ArtifactLocationError, match="outside this artifact root"):
        store.local_path("s3://someone-elses-bucket/rlhf/hh_raw/0123456789abcdef")
    with pytest.raises(ArtifactLocationError, match="outside this artifact root"):
        ArtifactStore("s3://our-bucket/rlhf").resolve("s3://our-bucket/rlhf-other/hh_raw/0123456789abcdef")
    assert store.local_path(str(tmp_path / "root" / uri)) == store.local_path(uri), "this root's absolute form"


def test_links_out_of_the_root_are_refused_and_publishing_replaces_them(tmp_path: Path) -> None:
    store, uri = _published(tmp_path)
    real = Path(store.resolve(uri))
    outside = tmp_path / "outside"
    shutil.copytree(real, outside)  # a byte-identical copy, so only the link itself is wrong
    shutil.rmtree(real)
    real.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactLocationError, match="outside the artifact root"):
        store.local_path(uri)
    assert store.publish_directory(tmp_path / "source", "hh_raw")[0] == uri, "publishing again repairs it"
    assert not real.is_symlink() and store.problem(uri) is None
    assert outside.is_dir(), "what the link pointed at is left alone"

    (real / "rows.txt").unlink()
    (real / "rows.txt").symlink_to(outside / "rows.txt")  # a link inside the artifact, same bytes
    with pytest.raises(ArtifactIntegrityError, match="rows.txt is a symbolic link"):
        store.local_path(uri)


def test_a_copied_project_reads_its_own_artifacts(tmp_path: Path, shared_hh_path: Path) -> None:
    """Materialize upstream in one project, copy it (artifacts and Dagster instance), delete the original and
    build downstream in the copy: every read resolves inside the copy."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    with project_instance(original) as instance:
        assert materialize(all_assets, selection=[*DATA_SNAPSHOTS, AssetKey("hh_raw"), AssetKey("preference_dataset")],
                           resources=graph_resources(original), instance=instance).success
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    with project_instance(copy) as instance:
        result = materialize(all_assets, selection=[AssetKey("eval_prompts")], resources=graph_resources(copy),
                             instance=instance)
        assert result.success
        prompts = pd.read_parquet(artifact_dir(instance, copy, "eval_prompts") / "eval_prompts.parquet")
        manifests = [manifest_of(instance, copy, name) for name in ("hh_raw", "preference_dataset", "eval_prompts")]
    assert len(prompts) == 100
    assert all(m.uri == f"{m.asset}/{m.content_hash[:16]}" for m in manifests)
    stored = "".join(path.read_text() for path in (copy / "artifacts").rglob("*.json"))
    assert str(original) not in stored, "nothing stored names the original project's paths"
