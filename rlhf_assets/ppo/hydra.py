"""trlx's hydra reference: a frozen copy of only the layers PPO trains, run on the policy trunk's hidden state.

When only the top `num_layers_unfrozen` blocks (+ final norm + LM head) train, everything below the branch point
is identical in the policy and the SFT reference. So the reference needs its own copy of just the top blocks,
the final norm and the LM head, fed the hidden state the policy's forward already computed at the branch
point: one trunk forward serves both, and for GPT-J with 2 unfrozen layers the copy holds 0.6 B parameters
instead of 6.05 B (trlx: `AutoModelForCausalLMWithHydraValueHead.forward_hydra`, `ModelBranch`).

The branch calls the copied blocks with the very arguments the policy's trunk passed to its first unfrozen
block (attention mask, position ids, rotary embeddings), captured by a forward pre-hook, so it works for any
architecture whose blocks `transformer_layers` finds, without re-deriving masks per model family.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from rlhf_assets.ppo.value_head import final_norm, transformer_layers


@dataclass
class BlockInput:
    """What the policy's trunk passed to the first block above the branch point, during one forward."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_states(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]


class FrozenBranch(nn.Module):
    """Frozen copies of the top blocks, the final norm and the LM head of the SFT model."""

    def __init__(self, model: PreTrainedModel, num_layers: int) -> None:
        super().__init__()
        layers = transformer_layers(model)
        if not 0 < num_layers <= len(layers):
            raise ValueError(f"a hydra branch needs 1..{len(layers)} layers, got {num_layers}")
        self.branch_index = len(layers) - num_layers
        self.blocks = nn.ModuleList(copy.deepcopy(block) for block in list(layers)[self.branch_index:])
        self.norm = copy.deepcopy(final_norm(model))
        self.head = copy.deepcopy(model.get_output_embeddings())
        self.requires_grad_(False).eval()

    @contextmanager
    def capture(self, policy_trunk: PreTrainedModel) -> Iterator[BlockInput]:
        """Record the input of the policy's block at the branch point while the body runs a policy forward."""
        captured = BlockInput()

        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.args, captured.kwargs = args, kwargs

        handle = transformer_layers(policy_trunk)[self.branch_index].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    @torch.no_grad()
    def forward(self, block_input: BlockInput, response_width: int) -> torch.Tensor:
        """(B, response_width, V) reference logits predicting each response token, as `response_logits` gives."""
        if not block_input.args and "hidden_states" not in block_input.kwargs:
            raise RuntimeError("the policy forward never reached the branch point; run it inside capture()")
        hidden = block_input.hidden_states.to(self.head.weight.dtype)
        rest = block_input.args[1:]
        kwargs = {k: v for k, v in block_input.kwargs.items() if k != "hidden_states"}
        for block in self.blocks:
            output = block(hidden, *rest, **kwargs)
            hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden[:, -(response_width + 1):-1]
        return self.head(self.norm(hidden))

