"""Detoxify checkpoints: write them, import published or user-supplied ones, and load them through Detoxify.

Detoxify's checkpoint is a `torch.save`d dict `{"config": {"arch": {"args": {model_type, model_name,
tokenizer_name, num_classes}}, "dataset": {"args": {"classes"}}}, "state_dict"}`. Offline it is loaded with
`Detoxify(checkpoint=..., huggingface_config_path=...)`, but Detoxify still builds the config from
`model_type`, resolved against the working directory (or the hub). So every `toxicity_model` artifact stores
the checkpoint with `model_type` set to its own `hf/` folder (config + tokenizer) and is loaded from inside
the artifact directory: the artifact works wherever it is copied, with no network.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.modeling.weights_only import weights_only_loads

CHECKPOINT_FILE = "detoxify.ckpt"
HF_DIR = "hf"
# The classes of Detoxify's `original` model (Jigsaw 2018), which Detoxify renames to Perspective's names.
ORIGINAL_CLASSES = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
TOXICITY_CLASS = "toxicity"


class ToxicityModelError(ValueError):
    """A Detoxify checkpoint that is missing or cannot be loaded; the message names the file and field."""


def save_detoxify_checkpoint(
    directory: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, classes: tuple[str, ...]
) -> Path:
    """Write `model` in Detoxify's checkpoint format with its config and tokenizer beside it in `hf/`."""
    hf = directory / HF_DIR
    model.config.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    checkpoint = directory / CHECKPOINT_FILE
    torch.save({
        "config": {
            "arch": {"args": {"model_type": HF_DIR, "model_name": type(model).__name__,
                              "tokenizer_name": type(tokenizer).__name__, "num_classes": len(classes)}},
            "dataset": {"args": {"classes": list(classes)}},
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }, checkpoint)
    return checkpoint


def _weights_only(data: bytes, source: str) -> dict[str, Any]:
    """Unpickle a checkpoint allowing tensors, containers and plain values only: a stored file is untrusted, and a
    pickle that names any other callable (a `__reduce__` payload) is refused before anything runs."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).partition("WeightsUnpickler error:")[2].strip().split("\n\n")[0].strip()
        if "global" in detail.lower():  # a callable outside torch's allowlist: code, not weights
            raise ToxicityModelError(f"{source}: refused: holds more than weights ({detail[:300]})") from None
        raise ToxicityModelError(f"{source}: not a torch checkpoint ({detail[:300] or exc})") from None
    except Exception as exc:  # torch raises several unrelated types for a file that is not a checkpoint
        raise ToxicityModelError(f"{source}: not a torch checkpoint ({type(exc).__name__}: {exc})") from None


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], bytes]:
    """The checkpoint's validated contents and the very bytes they came from (read once)."""
    if not path.is_file():
        raise ToxicityModelError(f"{path}: Detoxify checkpoint not found")
    data = path.read_bytes()
    loaded = _weights_only(data, str(path))
    for field in ("config", "state_dict"):
        if not isinstance(loaded, dict) or field not in loaded:
            raise ToxicityModelError(f"{path}: field {field!r} missing (Detoxify needs config and state_dict)")
    types = {"model_type": str, "model_name": str, "tokenizer_name": str, "num_classes": int}
    for field, kind in types.items():
        value = _field(loaded, path, "config", "arch", "args", field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ToxicityModelError(f"{path}: field 'config.arch.args.{field}' is {value!r}; it must be of type "
                                     f"{kind.__name__}")
    classes = _field(loaded, path, "config", "dataset", "args", "classes")
    if not isinstance(classes, list | tuple) or not all(isinstance(name, str) for name in classes):
        raise ToxicityModelError(f"{path}: field 'config.dataset.args.classes' is {classes!r}, not a list of names")
    return loaded, data


def _field(loaded: dict[str, Any], path: Path, *names: str) -> Any:
    """`loaded[names[0]][names[1]]...`, or a named error for the first level that is missing or not a dict."""
    value: Any = loaded
    for depth, name in enumerate(names):
        if not isinstance(value, dict) or name not in value:
            raise ToxicityModelError(f"{path}: field '{'.'.join(names[:depth + 1])}' missing")
        value = value[name]
    return value


def import_checkpoint(checkpoint: Path, huggingface_config_path: Path, directory: Path) -> Path:
    """Copy a user's Detoxify checkpoint and its HF config/tokenizer folder into an artifact directory."""
    loaded, _ = _read_checkpoint(checkpoint)
    if not (huggingface_config_path / "config.json").is_file():
        raise ToxicityModelError(f"{huggingface_config_path}: huggingface_config_path has no config.json")
    shutil.copytree(huggingface_config_path, directory / HF_DIR)
    loaded["config"]["arch"]["args"]["model_type"] = HF_DIR
    torch.save(loaded, directory / CHECKPOINT_FILE)
    return directory / CHECKPOINT_FILE


def import_published(model_type: str, directory: Path) -> Path:
    """Download a published Detoxify model (e.g. `original`, the recipe's) and store it for offline use.

    The download goes through torch hub's checkpoint cache (`TORCH_HOME`), as Detoxify's own loader does, so a
    machine that already has it (or the miniature mirror) needs no network."""
    from detoxify.detoxify import MODEL_URLS
    from transformers import AutoConfig, AutoTokenizer

    if model_type not in MODEL_URLS:
        raise ToxicityModelError(f"model_type {model_type!r} is not a published Detoxify model ({sorted(MODEL_URLS)})")
    url = MODEL_URLS[model_type]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if not cached.is_file():  # where Detoxify's own loader (torch.hub.load_state_dict_from_url) keeps it
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    loaded = _weights_only(cached.read_bytes(), url)
    args = loaded["config"]["arch"]["args"]
    hf = directory / HF_DIR
    AutoConfig.from_pretrained(args["model_type"], num_labels=args["num_classes"]).save_pretrained(hf)
    AutoTokenizer.from_pretrained(args["model_type"]).save_pretrained(hf)
    args["model_type"] = HF_DIR
    torch.save(loaded, directory / CHECKPOINT_FILE)
    return directory / CHECKPOINT_FILE


def _check_weights(directory: Path, loaded: dict[str, Any]) -> None:
    """Require exactly the weights the `hf/` config's model has, each of its shape, naming the first that is not.

    Detoxify hands the state dict to `from_pretrained`, which initialises a missing weight at random and drops
    an unknown one with a log line: a checkpoint without its classifier head would score every text about 0.5.
    Buffers the model computes itself (e.g. BERT's `position_ids`, saved by older transformers) may be present
    or absent.
    """
    import transformers

    args = loaded["config"]["arch"]["args"]
    source = directory / CHECKPOINT_FILE
    model_name = args["model_name"]
    model_class = getattr(transformers, model_name, None) if isinstance(model_name, str) else None
    if model_class is None:
        raise ToxicityModelError(f"{source}: field 'config.arch.args.model_name' {model_name!r} is not a "
                                 "transformers class")
    with torch.device("meta"):
        model = model_class(model_class.config_class.from_pretrained(directory / HF_DIR))
    expected = model.state_dict()
    computed = {name for name, _ in model.named_buffers()}
    given = loaded["state_dict"]
    if not isinstance(given, dict):
        raise ToxicityModelError(f"{source}: field 'state_dict' is a {type(given).__name__}, not a dict of tensors")
    missing = sorted(set(expected) - set(given) - computed)
    extra = sorted(set(given) - set(expected) - computed)
    if missing or extra:
        raise ToxicityModelError(f"{source}: field 'state_dict' does not hold exactly the weights of the model in "
                                 f"{HF_DIR}/: missing {missing[:5]} ({len(missing)}), not in the model {extra[:5]} "
                                 f"({len(extra)})")
    for name, tensor in given.items():
        if not isinstance(tensor, torch.Tensor):
            raise ToxicityModelError(f"{source}: field 'state_dict.{name}' is a {type(tensor).__name__}, not a tensor")
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise ToxicityModelError(
                f"{source}: field 'state_dict.{name}' has shape {tuple(tensor.shape)}, "
                f"the model in {HF_DIR}/ expects {tuple(expected[name].shape)}"
            )


def load_detoxify(directory: Path, device: str = "cpu") -> Any:
    """A `detoxify.Detoxify` built by Detoxify's own loading code from a `toxicity_model` artifact.

    Detoxify asks torch for the full (code-running) unpickler; it gets the weights-only one (`weights_only_loads`,
    in whatever process this runs), and the same bytes that passed the checks above, not the file read again.
    """
    from detoxify import Detoxify

    loaded, data = _read_checkpoint(directory / CHECKPOINT_FILE)
    _check_weights(directory, loaded)
    try:
        with contextlib.chdir(directory), weights_only_loads():
            scorer = Detoxify(checkpoint=io.BytesIO(data), huggingface_config_path=HF_DIR, device=device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ToxicityModelError(
            f"{directory / CHECKPOINT_FILE}: field 'state_dict' does not fit the model in {HF_DIR}/ "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
        ) from None
    vocabulary, embeddings = len(scorer.tokenizer), scorer.model.config.vocab_size
    if vocabulary > embeddings:
        raise ToxicityModelError(f"{directory / HF_DIR}: the tokenizer has {vocabulary} tokens but the model's "
                                 f"embeddings hold {embeddings} (a tokenizer from another model?)")
    if TOXICITY_CLASS not in scorer.class_names:
        raise ToxicityModelError(f"{directory / CHECKPOINT_FILE}: field 'config.dataset.args.classes' has no "
                                 f"toxicity class ({scorer.class_names})")
    return scorer


def toxicity_of(scorer: Any, texts: list[str], batch_size: int) -> list[float]:
    """Detoxify's `toxicity` probability of each text, scored `batch_size` texts at a time."""
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start: start + batch_size]
        predicted = scorer.predict(batch)[TOXICITY_CLASS]
        scores += predicted if isinstance(predicted, list) else [predicted]
    return [float(s) for s in scores]
