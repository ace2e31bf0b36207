"""The PPO policy: a causal LM with a scalar value head on its last hidden state, and layer freezing."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from rlhf_assets.ppo.sampling import response_logits


def make_value_head(hidden_size: int) -> nn.Sequential:
    """trlx's value head: hidden → 2·hidden → 1 with a ReLU."""
    return nn.Sequential(nn.Linear(hidden_size, hidden_size * 2), nn.ReLU(), nn.Linear(hidden_size * 2, 1))


class CausalLMWithValueHead(nn.Module):
    """Policy and critic sharing one trunk: logits for sampling/log-probs, values for GAE."""

    def __init__(self, base: PreTrainedModel) -> None:
        super().__init__()
        self.base = base
        self.v_head = make_value_head(base.config.hidden_size)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, response_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, Tr, V), values (B, Tr)) at the positions that predict the Tr response tokens.

        The value head reads the final norm's output, caught by a hook rather than `output_hidden_states`, which
        would keep every layer's hidden states alive (for GPT-J's rollout chunk, 16 × 1,024 × 4,096 × 29 in
        bf16: 3.6 GiB).
        """
        final: list[torch.Tensor] = []
        handle = final_norm(self.base).register_forward_hook(lambda _m, _i, output: final.append(output))
        try:
            logits, _ = response_logits(self.base, input_ids, attention_mask, position_ids, response_width)
        finally:
            handle.remove()
        hidden = final[-1][:, -(response_width + 1):-1]
        values = self.v_head(hidden.to(self.v_head[0].weight.dtype)).squeeze(-1)
        return logits, values


def _trunk_part(model: PreTrainedModel, names: tuple[str, ...], kind: type[nn.Module], what: str) -> nn.Module:
    """The first of `names` on the decoder under the LM head (through a PEFT wrapper if there is one)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(inner, inner.base_model_prefix)
    for name in names:
        part = getattr(trunk, name, None)
        if isinstance(part, kind):
            return part
    raise ValueError(f"cannot find the {what} of {type(model).__name__}")


def transformer_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The stack of transformer blocks, whatever the architecture calls it (GPT-NeoX, GPT-J, GPT-2, Llama)."""
    return _trunk_part(model, ("layers", "h", "blocks"), nn.ModuleList, "transformer layers")  # type: ignore[return-value]


def final_norm(model: PreTrainedModel) -> nn.Module:
    """The norm after the last block (GPT-NeoX `final_layer_norm`, GPT-J/GPT-2 `ln_f`, Llama `norm`)."""
    return _trunk_part(model, ("final_layer_norm", "ln_f", "norm"), nn.Module, "final norm")


def freeze_bottom_layers(model: PreTrainedModel, num_layers_unfrozen: int) -> int:
    """Train only the top `num_layers_unfrozen` blocks (+ final norm and LM head); -1 trains everything.

    Returns the number of trainable parameters. Embeddings and lower blocks are frozen, as trlx's
    `freeze_bottom_causal_layers` does (the LM head too when it is tied to the input embedding), which is what
    lets the recipe fit GPT-J's PPO on 7 GPUs.
    """
    if num_layers_unfrozen < 0:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = transformer_layers(model)
    if num_layers_unfrozen > len(layers):
        raise ValueError(f"num_layers_unfrozen ({num_layers_unfrozen}) exceeds the model's {len(layers)} layers")
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - num_layers_unfrozen:]:
        layer.requires_grad_(True)
    final_norm(model).requires_grad_(True)
    if not getattr(model.config, "tie_word_embeddings", False):  # a tied head is the input embedding: frozen
        model.get_output_embeddings().requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def add_lora(model: PreTrainedModel, rank: int, alpha: float) -> PreTrainedModel:
    """Wrap the policy trunk with LoRA adapters (PEFT); only the adapters (and the value head) train."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM"))
