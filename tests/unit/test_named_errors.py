"""Issue 28 (11): inputs that used to escape as raw exceptions (or worse, be taken) now fail with a named error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlhf_assets.modeling import base
from rlhf_assets.modeling.base import TokenizerLoadError, load_tokenizer
from rlhf_assets.resources import ArtifactStoreResource, ManifestRecordError, latest_artifact
from rlhf_assets.storage import ArtifactLocationError, ArtifactStore

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("root", "message"), [
    ("var/arti\0facts", "contains a NUL byte"),
    ("s3:/bucket/prefix", r"has one slash after 's3:'; a URI needs two \(s3://bucket/prefix\)"),
])
def test_artifact_locations_that_cannot_be_meant_are_named(root: str, message: str) -> None:
    with pytest.raises(ArtifactLocationError, match=message):
        ArtifactStore(root)
    with pytest.raises(ValueError, match=message):
        ArtifactStoreResource(root=root)


def _tokenizer_folder(directory: Path, pattern: str) -> Path:
    core = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(directory)
    saved = json.loads((directory / "tokenizer.json").read_text())
    saved["pre_tokenizer"]["pattern"] = {"Regex": pattern}
    (directory / "tokenizer.json").write_text(json.dumps(saved))
    return directory


def test_a_tokenizer_whose_pattern_does_not_compile_is_named(tmp_path: Path) -> None:
    folder = _tokenizer_folder(tmp_path, "(?<=a")
    with pytest.raises(TokenizerLoadError, match=rf"{tmp_path}: the tokenizer cannot be loaded \(Exception: "
                                                 r"Oniguruma error: end pattern with unmatched parenthesis"):
        load_tokenizer(folder)


def test_a_panic_inside_tokenizers_is_named_not_a_bare_base_exception(tmp_path: Path, monkeypatch) -> None:
    """tokenizers reports a Rust panic as `pyo3_runtime.PanicException`, a BaseException that gets past every
    `except Exception`; one is raised here the way pyo3 raises it (the class, by name)."""
    panic = type("PanicException", (BaseException,), {})

    def panicking(directory: object) -> None:
        raise panic("called `Result::unwrap()` on an `Err` value: regex too big")

    monkeypatch.setattr(base.AutoTokenizer, "from_pretrained", panicking)
    with pytest.raises(TokenizerLoadError, match=r"\(PanicException: called `Result::unwrap\(\)` on an `Err` value"):
        load_tokenizer(tmp_path)
    monkeypatch.setattr(base.AutoTokenizer, "from_pretrained", lambda directory: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        load_tokenizer(tmp_path)


def test_scripts_name_a_missing_or_wrong_dagster_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(ManifestRecordError, match="DAGSTER_HOME is not set"):
        latest_artifact("sft_model")
    with pytest.raises(ManifestRecordError, match=r"DAGSTER_HOME '.*nowhere' is not a directory"):
        latest_artifact("sft_model", dagster_home=str(tmp_path / "nowhere"))
