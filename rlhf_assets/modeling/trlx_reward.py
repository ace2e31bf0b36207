"""Loading reward models published in trlx's `GPTRewardModel` format (e.g. `Dahoas/gptj-rm-static`).

That format is a bare `state_dict` (`.pt`/`.bin`) of a causal LM's trunk under `transformer.` plus a bias-free
`v_head` linear layer, read at the EOS appended after prompt + response. A Hugging Face `*ForSequenceClassification`
model with one label has the same trunk and a bias-free `score` head, so we convert once and the rest of the graph
sees one reward-model format; where the head is read is not the classifier's own pooling (with pad = EOS that is
one token early) but `modeling.scoring.RewardReadout`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

TRUNK_PREFIX = "transformer."
HEAD_KEY = "v_head.weight"


def resolve_checkpoint_file(source: str) -> Path:
    """Find the weights file in a local directory, or download the hub repo first (users with internet)."""
    directory = Path(source)
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(source, allow_patterns=["*.pt", "*.bin"]))
    for candidate in sorted(directory.iterdir()):
        if candidate.suffix in (".pt", ".bin"):
            return candidate
    raise FileNotFoundError(f"{source}: no trlx reward checkpoint (*.pt or *.bin) found in {directory}")


def load_trlx_reward_model(source: str, trunk: str, pad_token_id: int) -> PreTrainedModel:
    """Build a one-label sequence-classification model from a trlx reward checkpoint over `trunk`'s config."""
    checkpoint = resolve_checkpoint_file(source)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if HEAD_KEY not in state:
        raise ValueError(f"{checkpoint}: not a trlx reward model, key {HEAD_KEY!r} is missing")
    config = AutoConfig.from_pretrained(trunk, num_labels=1, pad_token_id=pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config)
    prefix = model.base_model_prefix
    converted = {f"{prefix}.{k[len(TRUNK_PREFIX):]}": v for k, v in state.items() if k.startswith(TRUNK_PREFIX)}
    converted["score.weight"] = state[HEAD_KEY]
    unknown = sorted(k for k in state if k != HEAD_KEY and not k.startswith(TRUNK_PREFIX))
    if unknown:
        raise ValueError(f"{checkpoint}: unexpected keys for a trlx reward model: {unknown[:5]}")
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("masked_bias", ".bias_mask", "attn.bias"))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint}: does not match trunk {trunk!r}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()
