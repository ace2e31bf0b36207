import fcntl
import os
import stat
import threading
from pathlib import Path

import pytest

from rlhf_assets import storage
from rlhf_assets.artifact_files import COMPLETE_MARKER, UnpublishableEntryError, describe_directory, hash_directory
from rlhf_assets.storage import ArtifactStore, ArtifactStoreError, UnsafeDirectoryError, private_directory

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

    def copy_then_die(source, target, description):
        Path(target).mkdir(parents=True)
        (Path(target) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "_copy_described", copy_then_die)
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


@pytest.mark.parametrize("kind", ["symlink-to-secret", "linked-directory", "fifo", "socket"])
def test_publish_copies_regular_files_only(tmp_path: Path, kind: str) -> None:
    """A link would publish whatever it points at (a secret) or copy a directory nobody hashed; a FIFO would block
    the publish for good. Each is refused by name, before anything is opened or copied."""
    secret = tmp_path / "secret"
    secret.write_text("api key")
    output = _model_dir(tmp_path / "out", b"w")
    entry = output / "sub" / "vocab.txt"
    if kind == "symlink-to-secret":
        entry.symlink_to(secret)
    elif kind == "linked-directory":
        entry.symlink_to(tmp_path, target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(entry)
    else:
        import socket

        server = socket.socket(socket.AF_UNIX)
        server.bind(str(entry))
    expected = {"symlink-to-secret": "symbolic link", "linked-directory": "symbolic link", "fifo": "FIFO",
                "socket": "socket"}[kind]
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(UnpublishableEntryError, match=f"sub/vocab.txt is a {expected}, not a regular file"):
        store.publish_directory(output, "toxicity_model")
    assert not (tmp_path / "store" / "toxicity_model").exists() or not any(
        (tmp_path / "store" / "toxicity_model").iterdir())


def test_published_files_are_owner_only_and_match_what_was_described(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    uri, _, _ = store.publish_directory(_model_dir(tmp_path / "a", b"w"), "eval_responses")
    for path in (tmp_path / "store" / uri).rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    output = _model_dir(tmp_path / "b", b"described")
    description = describe_directory(output)
    (output / "model.safetensors").write_bytes(b"swapped!!")  # same size
    with pytest.raises(ArtifactStoreError, match="changed after the step described it"):
        store.publish_output(str(output), "eval_responses", description)
    unhashed = description.model_copy(update={"hashes": {}})  # a description that names files and sizes only
    with pytest.raises(ArtifactStoreError, match=f"its files hash to [0-9a-f]{{64}}, the step described "
                                                 f"{description.content_hash}"):
        store.publish_output(str(output), "eval_responses", unhashed)


def test_a_killed_publish_leaves_staging_that_the_next_publish_removes(tmp_path: Path) -> None:
    """A SIGKILL mid-copy leaves `.tmp-<hash>-<id>` (up to a whole checkpoint) behind: its lock is free, so the next
    publish of the asset deletes it; one whose publisher still holds the lock is left alone."""
    folder = tmp_path / "store" / "sft_model"
    folder.mkdir(parents=True)
    abandoned, live = folder / ".tmp-0123456789abcdef-dead0001", folder / ".tmp-0123456789abcdef-live0002"
    for staging in (abandoned, live):
        (staging / "sub").mkdir(parents=True)
        (staging / "model.safetensors").write_bytes(b"x" * 1000)
        Path(f"{staging}.lock").touch()
    with open(f"{live}.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        ArtifactStore(str(tmp_path / "store")).publish_directory(_model_dir(tmp_path / "a", b"w"), "sft_model")
        assert not abandoned.exists() and not Path(f"{abandoned}.lock").exists()
        assert live.exists(), "a publish still copying keeps its staging directory"


def test_a_fifo_at_an_artifacts_place_does_not_hang_the_repair(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    uri, _, _ = store.publish_directory(_model_dir(tmp_path / "a", b"w"), "sft_model")
    marker = tmp_path / "store" / uri / COMPLETE_MARKER
    marker.unlink()
    os.mkfifo(marker)
    assert "_COMPLETE is a FIFO" in (store.problem(uri) or "")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (store.publish_directory(_model_dir(tmp_path / "b", b"w"), "sft_model"),
                                              done.set()), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set(), "the repair publish hung on the FIFO"
    assert store.problem(uri) is None


def test_the_download_cache_is_private_and_never_someone_elses(tmp_path: Path) -> None:
    created = private_directory(tmp_path / "cache")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(UnsafeDirectoryError, match="has mode 0755; others may read or write it"):
        private_directory(shared)
    (tmp_path / "planted").symlink_to(created, target_is_directory=True)
    with pytest.raises(UnsafeDirectoryError, match="is not a directory"):
        private_directory(tmp_path / "planted")
