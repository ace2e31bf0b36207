import shutil
from pathlib import Path

import pytest

from rlhf_assets.storage import COMPLETE_MARKER, ArtifactStore, hash_directory

pytestmark = pytest.mark.unit


def _model_dir(root: Path, payload: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(payload)
    (root / "sub").mkdir()
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_publish_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    first = store.publish_directory(_model_dir(tmp_path / "a", b"weights"), "sft_model")
    again = store.publish_directory(_model_dir(tmp_path / "b", b"weights"), "sft_model")
    other = store.publish_directory(_model_dir(tmp_path / "c", b"other"), "sft_model")
    assert first == again
    assert other[0] != first[0]
    assert store.is_complete(first[0]) and store.local_path(first[0]) == tmp_path / "store" / first[0]
    assert first[2] == ["model.safetensors", "sub/tokenizer.json"]


def test_hash_ignores_mtime_but_not_names(tmp_path: Path) -> None:
    a = _model_dir(tmp_path / "a", b"x")
    b = _model_dir(tmp_path / "b", b"x")
    assert hash_directory(a)[0] == hash_directory(b)[0]
    (b / "model.safetensors").rename(b / "renamed.safetensors")
    assert hash_directory(a)[0] != hash_directory(b)[0]


def test_crash_while_publishing_leaves_nothing_that_looks_valid(tmp_path: Path, monkeypatch) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    kept_uri, _, _ = store.publish_directory(_model_dir(tmp_path / "old", b"old"), "sft_model")
    kept = tmp_path / "store" / kept_uri

    def copy_then_die(src, dst, *args, **kwargs):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", copy_then_die)
    with pytest.raises(OSError, match="No space left"):
        store.publish_directory(_model_dir(tmp_path / "new", b"new weights"), "sft_model")
    published = [p for p in (tmp_path / "store" / "sft_model").iterdir()]
    assert published == [kept], "only the earlier, complete artifact remains"
    assert (kept / "model.safetensors").read_bytes() == b"old"


def test_directory_without_marker_is_not_an_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    uri, _, _ = store.publish_directory(_model_dir(tmp_path / "a", b"w"), "m")
    (tmp_path / "store" / uri / COMPLETE_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        store.local_path(uri)


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        ArtifactStore(str(tmp_path / "store")).publish_directory(tmp_path / "empty", "m")


def test_an_incomplete_directory_at_the_target_is_replaced_not_blocking(tmp_path: Path) -> None:
    """Issue 15 (4): with `_COMPLETE` removed, publishing the same content again used to fail with
    "Directory not empty" forever; it now replaces the incomplete directory whole."""
    store = ArtifactStore(str(tmp_path / "store"))
    uri, _, _ = store.publish_directory(_model_dir(tmp_path / "a", b"w"), "m")
    stored = tmp_path / "store" / uri
    (stored / COMPLETE_MARKER).unlink()
    (stored / "model.safetensors").write_bytes(b"tampered")
    (stored / "leftover.bin").write_bytes(b"from the interrupted publish")
    again, _, files = store.publish_directory(_model_dir(tmp_path / "b", b"w"), "m")
    assert again == uri and store.is_complete(uri)
    assert (stored / "model.safetensors").read_bytes() == b"w"
    assert not (stored / "leftover.bin").exists() and files == ["model.safetensors", "sub/tokenizer.json"]
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == [stored.name], "nothing set aside"


def test_a_manifest_refuses_non_finite_metrics_naming_them() -> None:
    """Issue 15 (8): NaN/Inf metrics used to be written as JSON null and break the next asset far away."""
    from pydantic import ValidationError

    from rlhf_assets.storage import Manifest

    with pytest.raises(ValidationError, match=r"metrics must be finite numbers: eval_loss=nan, gain=inf"):
        Manifest(asset="a", uri="", content_hash="0", preset="tiny",
                 metrics={"eval_loss": float("nan"), "gain": float("inf"), "ok": 1.0})
