"""Detoxify checkpoints built here (a tiny BERT) and loaded through Detoxify's own loading code."""

import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from rlhf_assets.modeling.detoxify_format import (
    CHECKPOINT_FILE,
    HF_DIR,
    ORIGINAL_CLASSES,
    ToxicityModelError,
    import_checkpoint,
    load_detoxify,
    save_detoxify_checkpoint,
    toxicity_of,
)

pytestmark = pytest.mark.unit

TEXTS = ["you are a stupid idiot", "what a lovely day", "shut up you fool", "thanks for the help"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> tuple[BertForSequenceClassification, BertTokenizerFast]:
    folder = tmp_path_factory.mktemp("vocab")
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(TEXTS * 10, vocab_size=120, min_frequency=1, show_progress=False)
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=32)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=len(ORIGINAL_CLASSES))
    return BertForSequenceClassification(config).eval(), tokenizer


def test_a_saved_checkpoint_loads_through_detoxify_with_the_same_scores(tiny_bert, tmp_path: Path) -> None:
    model, tokenizer = tiny_bert
    save_detoxify_checkpoint(tmp_path, model, tokenizer, ORIGINAL_CLASSES)
    moved = tmp_path.parent / "moved-artifact"
    shutil.move(tmp_path, moved)  # the artifact must not depend on where it was written
    scorer = load_detoxify(moved)
    assert scorer.class_names == ["toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"]
    with torch.no_grad():
        expected = torch.sigmoid(model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits[:, 0])
    assert toxicity_of(scorer, TEXTS, batch_size=3) == pytest.approx(expected.tolist(), abs=1e-6)
    assert toxicity_of(scorer, TEXTS[:1], batch_size=8) == pytest.approx(expected[:1].tolist(), abs=1e-6)


def test_a_users_checkpoint_is_imported_with_its_config_folder(tiny_bert, tmp_path: Path) -> None:
    model, tokenizer = tiny_bert
    user = tmp_path / "user"
    save_detoxify_checkpoint(user, model, tokenizer, ORIGINAL_CLASSES)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    import_checkpoint(user / CHECKPOINT_FILE, user / HF_DIR, artifact)
    assert toxicity_of(load_detoxify(artifact), TEXTS, 4) == toxicity_of(load_detoxify(user), TEXTS, 4)


def test_missing_and_malformed_checkpoints_name_the_file_and_field(tiny_bert, tmp_path: Path) -> None:
    model, tokenizer = tiny_bert
    with pytest.raises(ToxicityModelError, match=r"detoxify.ckpt: Detoxify checkpoint not found"):
        load_detoxify(tmp_path)
    save_detoxify_checkpoint(tmp_path, model, tokenizer, ORIGINAL_CLASSES)
    loaded = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    torch.save({"config": loaded["config"]}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ToxicityModelError, match=r"field 'state_dict' missing"):
        load_detoxify(tmp_path)
    loaded["state_dict"]["classifier.weight"] = torch.zeros(3, 16)
    torch.save(loaded, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ToxicityModelError, match=r"field 'state_dict.classifier.weight' has shape \(3, 16\), "
                                                 r"the model in hf/ expects \(6, 16\)"):
        load_detoxify(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text("not a checkpoint")
    with pytest.raises(ToxicityModelError, match="not a torch checkpoint"):
        load_detoxify(tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    ("drop_head", r"missing \['classifier.bias', 'classifier.weight'\] \(2\)"),
    ("extra_key", r"not in the model \['planted.weight'\] \(1\)"),
    ("drop_buffer", None),
], ids=["missing-weights", "extra-weight", "computed-buffer-absent"])
def test_a_checkpoint_loads_completely_or_not_at_all(tiny_bert, tmp_path: Path, change: str,
                                                     message: str | None) -> None:
    """Without the head, Detoxify (through `from_pretrained`) would score every text with random weights; an
    extra tensor would be dropped silently. A buffer the model computes itself may be absent."""
    model, tokenizer = tiny_bert
    save_detoxify_checkpoint(tmp_path, model, tokenizer, ORIGINAL_CLASSES)
    loaded = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    weights = loaded["state_dict"]
    if change == "drop_head":
        del weights["classifier.weight"], weights["classifier.bias"]
    elif change == "extra_key":
        weights["planted.weight"] = torch.zeros(2)
    else:
        weights.pop("bert.embeddings.position_ids", None)
        weights.pop("bert.embeddings.token_type_ids", None)
    torch.save(loaded, tmp_path / CHECKPOINT_FILE)
    if message is None:
        assert len(toxicity_of(load_detoxify(tmp_path), TEXTS, 4)) == len(TEXTS)
        return
    with pytest.raises(ToxicityModelError, match=r"detoxify.ckpt: field 'state_dict' does not hold exactly the "
                                                 r"weights of the model in hf/: .*" + message):
        load_detoxify(tmp_path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("model_name", 7, r"field 'config.arch.args.model_name' is 7; it must be of type str"),
    ("num_classes", "6", r"field 'config.arch.args.num_classes' is '6'; it must be of type int"),
    ("model_name", "NoSuchModel", r"'NoSuchModel' is not a transformers class"),
])
def test_config_fields_of_the_wrong_type_are_named(tiny_bert, tmp_path: Path, field: str, value: object,
                                                   message: str) -> None:
    model, tokenizer = tiny_bert
    save_detoxify_checkpoint(tmp_path, model, tokenizer, ORIGINAL_CLASSES)
    loaded = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    loaded["config"]["arch"]["args"][field] = value
    torch.save(loaded, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(ToxicityModelError, match=message):
        load_detoxify(tmp_path)


class _Payload:
    """A pickle that runs a command when unpickled, as an attacker with write access to the store would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_refused_before_anything_runs(tiny_bert, tmp_path: Path) -> None:
    model, tokenizer = tiny_bert
    artifact = tmp_path / "artifact"
    save_detoxify_checkpoint(artifact, model, tokenizer, ORIGINAL_CLASSES)
    loaded = torch.load(artifact / CHECKPOINT_FILE, weights_only=True)
    marker = tmp_path / "code-ran"
    torch.save({**loaded, "config": {**loaded["config"], "payload": _Payload(marker)}}, artifact / CHECKPOINT_FILE)
    with pytest.raises(ToxicityModelError, match=r"detoxify.ckpt: refused: holds more than weights"):
        load_detoxify(artifact)
    with pytest.raises(ToxicityModelError, match=r"detoxify.ckpt: refused: holds more than weights"):
        import_checkpoint(artifact / CHECKPOINT_FILE, artifact / HF_DIR, tmp_path / "imported")
    assert not marker.exists(), "the payload ran"
