"""The bad-input corpus: every case fails with a clear error naming what was wrong, and nothing earlier is lost.

One small instance holds good materializations (`hh_raw`, `preference_dataset`, `eval_prompts`, `rtp_records`)
and stored labels; each case then feeds one bad input through the real entry point (a materialization, the
label store, the Ground Truth parser, the Detoxify loader) and the test asserts the message and that every
manifest, artifact and label is exactly as before.
"""

from __future__ import annotations

import errno
import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from dagster import AssetKey, DagsterInstance, DagsterInvalidConfigError, instance_for_test, materialize
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from rlhf_assets import storage
from rlhf_assets.artifact_files import hash_directory
from rlhf_assets.labeling.groundtruth import parse_output_manifest
from rlhf_assets.labeling.store import LabelStore
from rlhf_assets.labeling.tasks import PairwiseTask, read_tasks
from rlhf_assets.modeling.detoxify_format import ORIGINAL_CLASSES, import_checkpoint, load_detoxify
from rlhf_assets.modeling.detoxify_format import save_detoxify_checkpoint as save_checkpoint
from rlhf_assets.resources import ArtifactStoreResource
from tests.conftest import DATA_SNAPSHOTS, all_assets, graph_resources, hh_row, manifest_of, write_jsonl
from tests.labeling_helpers import ATTRIBUTE, queue_tasks

pytestmark = pytest.mark.graph
GOOD_ASSETS = ("hh_raw", "preference_dataset", "eval_prompts", "rtp_records")


@dataclass
class Baseline:
    root: Path
    instance: DagsterInstance
    resources: dict[str, Any]
    store: LabelStore
    tasks: list[PairwiseTask]
    snapshot: dict[str, Any]


def _snapshot(root: Path, store: LabelStore, instance: DagsterInstance) -> dict[str, Any]:
    """Everything a bad input must not touch: manifests, their artifacts' files, labels, latest materializations."""
    files = sorted((root / "artifacts" / "manifests").rglob("*.json"))
    manifests = {path.relative_to(root).as_posix(): path.read_text() for path in files}
    artifacts = {}
    for name in GOOD_ASSETS:
        manifest = manifest_of(instance, root, name)
        directory = root / "artifacts" / manifest.uri
        artifacts[manifest.uri] = hash_directory(directory)[0] if (directory / "_COMPLETE").exists() else None
    labels = [(label.task_id, label.annotator, label.choice.value) for label in store.labels(store.active_batch())]
    latest = {name: instance.get_latest_materialization_event(AssetKey(name)).run_id for name in GOOD_ASSETS}
    return {"manifests": manifests, "artifacts": artifacts, "labels": labels, "latest": latest}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, shared_hh_path: Path):
    root = tmp_path_factory.mktemp("corpus")
    with instance_for_test() as instance:
        resources = graph_resources(root)  # the tiny preset: the shared HH and RTP files
        assert materialize(all_assets, selection=[*DATA_SNAPSHOTS, *(AssetKey(name) for name in GOOD_ASSETS)],
                           resources=resources,
                           instance=instance).success
        store = resources["labeling"].store()
        tasks = queue_tasks(store, 3)
        store.add_annotator("ann")
        store.submit("ann", tasks[0].task_id, "A", "kept")
        yield Baseline(root, instance, resources, store, tasks, _snapshot(root, store, instance))


def _failure(baseline: Baseline, asset: str, config: dict[str, Any], resources: dict | None = None,
             run_config: dict[str, Any] | None = None) -> str:
    """Materialize `asset` with `config` (or a whole `run_config`); the error text (invalid config raises before
    the run starts)."""
    try:
        result = materialize(all_assets, selection=[AssetKey(asset)], resources=resources or baseline.resources,
                             instance=baseline.instance, raise_on_error=False,
                             run_config=run_config or {"ops": {asset: {"config": config}}})
    except DagsterInvalidConfigError as error:
        return str(error)
    assert not result.success, f"{asset} with {config} should have failed"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.error.to_string()


def _hh_source(tmp: Path, content: bytes, name: str = "bad.jsonl") -> dict[str, str]:
    (tmp / name).write_bytes(content)
    return {"source": str(tmp / name)}


def _truncated_gzip(rows: list[dict]) -> bytes:
    data = gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode())
    return data[: len(data) // 2]


def _rtp_line(**prompt: Any) -> bytes:
    record = {"filename": "x.txt", "begin": 0, "end": 10, "challenging": False,
              "prompt": {"text": "Some text", "toxicity": 0.1, **prompt},
              "continuation": {"text": " more", "toxicity": 0.2}}
    return (json.dumps(record) + "\n").encode()


def _hh(tmp: Path, b: Baseline, content: bytes, name: str = "bad.jsonl") -> str:
    return _failure(b, "hh_raw", _hh_source(tmp, content, name))


def _rtp(tmp: Path, b: Baseline, content: bytes, name: str = "bad.jsonl") -> str:
    return _failure(b, "rtp_records", _hh_source(tmp, content, name))


def _label_error(call: Callable[[], Any]) -> str:
    try:
        call()
    except ValueError as error:
        return f"{getattr(error, 'status', '')} {error}"
    raise AssertionError("expected an error")


def _bert_with_tokenizer(tmp: Path, vocab_size: int) -> Path:
    """A Detoxify checkpoint whose model has `vocab_size` embeddings and whose tokenizer may have more."""
    folder = tmp / "vocab"
    folder.mkdir()
    words = [f"word{i}" for i in range(300)]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(words * 3, vocab_size=200, min_frequency=1, show_progress=False)
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=32)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=len(ORIGINAL_CLASSES))
    torch.manual_seed(0)
    directory = tmp / "model"
    save_checkpoint(directory, BertForSequenceClassification(config), tokenizer, ORIGINAL_CLASSES)
    return directory


def _disk_full(tmp: Path, b: Baseline, monkeypatch: pytest.MonkeyPatch) -> str:
    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_copy_described", no_space)
    fresh = write_jsonl(tmp / "fresh.jsonl", [hh_row(f"q{i}", f"good {i}", f"bad {i}") for i in range(20)])
    return _failure(b, "hh_raw", {"source": str(fresh)})


def _unwritable_root(tmp: Path, b: Baseline) -> str:
    (tmp / "a-file").write_text("not a directory")
    resources = {**b.resources, "artifacts": ArtifactStoreResource(root=str(tmp / "a-file" / "artifacts"))}
    fresh = write_jsonl(tmp / "fresh.jsonl", [hh_row(f"q{i}", f"good {i}", f"bad {i}") for i in range(20)])
    return _failure(b, "hh_raw", {"source": str(fresh)}, resources)


def _gt_line(b: Baseline, line: str) -> str:
    tasks = {task.task_id: task for task in b.tasks}
    return _label_error(lambda: parse_output_manifest([line], label_attribute=ATTRIBUTE, tasks=tasks,
                                                      source="s3://bucket/output.manifest"))


CASES: list[tuple[str, Callable[..., str], str]] = [
    # data: the HH source of hh_raw
    ("hh-malformed-json", lambda t, b, m: _hh(t, b, b'{"chosen": "a", "rejected": "b"}\n{"chosen": "x", "rej'),
     r"bad\.jsonl, line 2: malformed JSON"),
    ("hh-truncated-gzip", lambda t, b, m: _hh(t, b, _truncated_gzip([hh_row("a", "b", "c")] * 500), "cut.jsonl.gz"),
     r"cut\.jsonl\.gz, line \d+: gzip stream is corrupt or truncated"),
    ("hh-empty-file", lambda t, b, m: _hh(t, b, b""), r"bad\.jsonl: file is empty"),
    ("hh-wrong-type", lambda t, b, m: _hh(t, b, b'{"chosen": 3, "rejected": "x"}\n'),
     r"bad\.jsonl, line 1, field 'chosen': expected a string, got int"),
    ("hh-missing-field", lambda t, b, m: _hh(t, b, json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: y"}).encode()),
     r"bad\.jsonl, line 1, field 'rejected': missing"),
    ("hh-not-utf8", lambda t, b, m: _hh(t, b, b'{"chosen": "a", "rejected": "\xff\xfe"}\n'),
     r"bad\.jsonl, line 1: not valid UTF-8"),
    ("hh-huge-line", lambda t, b, m: _hh(t, b, b'{"chosen": "' + b"a" * (17 << 20)),
     r"bad\.jsonl, line 1: line is longer than 16 MiB"),
    ("hh-json-array", lambda t, b, m: _hh(t, b, b"[1, 2]\n"), r"line 1: expected a JSON object, got list"),
    ("hh-deep-json", lambda t, b, m: _hh(t, b, b'{"chosen": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"),
     r"bad\.jsonl, line 1: JSON nested too deeply"),
    ("hh-lone-surrogate", lambda t, b, m: _hh(t, b, b'{"chosen": "a", "rejected": "x\\ud800y"}\n'),
     r"bad\.jsonl, line 1, field 'rejected': not valid Unicode text"),
    ("hh-field-changes-type", lambda t, b, m: _hh(t, b, b'{"chosen": "a", "rejected": "b", "meta": "x"}\n'
                                                    b'{"chosen": "c", "rejected": "d", "meta": 3}\n'),
     r"bad\.jsonl, line 2, field 'meta': is int here but str on line 1"),
    ("hh-reserved-field", lambda t, b, m: _hh(t, b, b'{"chosen": "a", "rejected": "b", "source_line": 7}\n'),
     r"bad\.jsonl, line 1, field 'source_line': is a reserved name"),
    ("hh-missing-path", lambda t, b, m: _failure(b, "hh_raw", {"source": str(t / "nowhere.jsonl")}),
     r"nowhere\.jsonl: file does not exist"),
    ("hh-empty-directory", lambda t, b, m: _failure(b, "hh_raw", {"source": str(t)}),
     r"doesn't contain any data files"),
    # config
    ("config-unknown-preset", lambda t, b, m: _failure(b, "hh_raw", {}, run_config={"resources": {"preset": {
        "config": {"name": "huge"}}}}), r"root:resources:preset:config:name not in enum type PresetName got huge"),
    ("config-unknown-field", lambda t, b, m: _failure(b, "eval_prompts", {"epochz": 3}),
     r'Received unexpected config entry "epochz"'),
    ("config-wrong-type", lambda t, b, m: _failure(b, "preference_dataset", {"test_fraction": "half"}),
     r"test_fraction"),
    ("config-out-of-range", lambda t, b, m: _failure(b, "preference_dataset", {"test_fraction": 1.5}),
     r"test_fraction\n  Input should be less than 1"),
    # prompts: RealToxicityPrompts records
    ("rtp-missing-text", lambda t, b, m: _rtp(t, b, _rtp_line(text=None)), r"line 1, field 'prompt\.text'"),
    ("rtp-score-not-number", lambda t, b, m: _rtp(t, b, _rtp_line(toxicity="high")),
     r"line 1, field 'prompt\.toxicity'"),
    ("rtp-score-infinite", lambda t, b, m: _rtp(t, b, _rtp_line(toxicity=float("inf"))),
     r"line 1, field 'prompt\.toxicity': expected a Perspective probability in \[0, 1\] or null, got inf"),
    ("rtp-score-above-one", lambda t, b, m: _rtp(t, b, _rtp_line(insult=7.5)),
     r"line 1, field 'prompt\.insult': .* got 7\.5"),
    ("rtp-score-negative", lambda t, b, m: _rtp(t, b, _rtp_line(threat=-3)),
     r"line 1, field 'prompt\.threat': .* got -3"),
    ("rtp-truncated-gzip", lambda t, b, m: _rtp(t, b, gzip.compress(_rtp_line() * 3000)[:2000], "cut.jsonl.gz"),
     r"cut\.jsonl\.gz, line \d+: gzip stream is corrupt or truncated"),
    ("rtp-too-few-prompts", lambda t, b, m: _failure(b, "rtp_prompts", {"num_prompts": 100_000}),
     r"asks for 100000 prompts but only \d+ distinct prompts exist"),
    # checkpoints
    ("checkpoint-missing", lambda t, b, m: _label_error(lambda: import_checkpoint(t / "none.ckpt", t, t / "o")),
     r"none\.ckpt: Detoxify checkpoint not found"),
    ("checkpoint-garbage", lambda t, b, m: (t / "junk.ckpt").write_bytes(b"\x00junk" * 100) and _label_error(
        lambda: import_checkpoint(t / "junk.ckpt", t, t / "o")), r"junk\.ckpt: not a torch checkpoint"),
    ("checkpoint-wrong-tokenizer", lambda t, b, m: _label_error(lambda: load_detoxify(_bert_with_tokenizer(t, 50))),
     r"hf: the tokenizer has \d+ tokens but the model's embeddings hold 50"),
    # labels
    ("label-unknown-task", lambda t, b, m: _label_error(lambda: b.store.submit("ann", "nope-1", "A")),
     r"404 unknown task 'nope-1'"),
    ("label-second-different", lambda t, b, m: _label_error(lambda: b.store.submit("ann", b.tasks[0].task_id, "B")),
     r"409 ann already labelled task .* as 'A'; the first label is kept"),
    ("label-bad-choice", lambda t, b, m: _label_error(lambda: b.store.submit("ann", b.tasks[1].task_id, "maybe")),
     r"400 choice must be one of A, B, tie; got 'maybe'"),
    ("label-gt-malformed-line", lambda t, b, m: _gt_line(b, '{"source": "{\\"task_id\\": '),
     r"output\.manifest:1: field 'source' does not hold a task"),
    ("label-tasks-file-truncated", lambda t, b, m: (t / "tasks.jsonl").write_text('{"task_id": "x", "prompt') and
     _label_error(lambda: read_tasks(t / "tasks.jsonl")), r"tasks\.jsonl:1: not JSON"),
    # storage
    ("store-unwritable-root", lambda t, b, m: _unwritable_root(t, b),
     r"could not publish 'hh_raw' to artifact root .*a-file/artifacts: .*; earlier artifacts are untouched"),
    ("store-disk-full", lambda t, b, m: _disk_full(t, b, m),
     r"could not publish 'hh_raw' .*: No space left on device .*earlier artifacts are untouched"),
]


@pytest.mark.parametrize(("case", "make", "message"), CASES, ids=[case for case, _, _ in CASES])
def test_bad_input_fails_clearly_and_keeps_everything_earlier(
    baseline: Baseline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, make: Callable[..., str],
    message: str,
) -> None:
    error = make(tmp_path, baseline, monkeypatch)
    assert error is not None and re.search(message, error), f"{case}: {error[:2000]}"
    monkeypatch.undo()
    assert _snapshot(baseline.root, baseline.store, baseline.instance) == baseline.snapshot


def test_the_corpus_covers_every_kind_of_input() -> None:
    kinds = {case.split("-")[0] for case, _, _ in CASES}
    assert len(CASES) >= 20 and kinds == {"hh", "config", "rtp", "checkpoint", "label", "store"}
