"""trlx's hydra reference: frozen copies of only the trained top layers, run on the policy trunk's hidden state,
must give the SFT model's log-probs exactly, for the recipe's GPT-J architecture and for GPT-NeoX."""

import copy
from pathlib import Path

import pytest
import torch

from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.hydra import FrozenBranch
from rlhf_assets.ppo.sampling import join_query_response, left_pad, response_logits, response_logprobs, right_pad
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead, final_norm, freeze_bottom_layers, transformer_layers
from tests.ppo_toys import CharTokenizer, tiny_gptj, tiny_neox

pytestmark = pytest.mark.unit

BATCHES = {
    "no padding": ([[5, 6, 7, 8], [9, 10, 11, 12]], [[13, 14, 15], [16, 17, 18]]),
    "left-padded prompts, right-padded responses": ([[5, 6, 7, 8, 9, 10], [11, 12]], [[13, 14, 15, 16], [17]]),
}


@pytest.mark.parametrize("build", [tiny_gptj, tiny_neox], ids=["gptj", "neox"])
@pytest.mark.parametrize("batch", list(BATCHES), ids=["unpadded", "padded"])
def test_hydra_reference_equals_a_full_frozen_copy_after_the_policy_moved(build, batch: str) -> None:
    model = build()
    reference = copy.deepcopy(model).requires_grad_(False)
    freeze_bottom_layers(model, 1)
    branch = FrozenBranch(model, 1)
    with torch.no_grad():  # stand-in for training: every trainable weight moves, the frozen trunk does not
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    policy = CausalLMWithValueHead(model)
    queries, responses = BATCHES[batch]
    (q_ids, q_mask), (r_ids, r_mask) = left_pad(queries, 0), right_pad(responses, 0)
    ids, mask, positions = join_query_response(q_ids, q_mask, r_ids, r_mask)
    width = r_ids.shape[1]
    with torch.no_grad():
        with branch.capture(model) as captured:
            policy_logits, _ = policy(ids, mask, positions, width)
        hydra = response_logprobs(branch(captured, width), ids, width)
        full = response_logprobs(response_logits(reference, ids, mask, positions, width)[0], ids, width)
    moved = response_logprobs(policy_logits, ids, width)
    keep = r_mask.bool()
    assert torch.allclose(hydra[keep], full[keep], atol=1e-5), (hydra - full)[keep].abs().max()
    assert not torch.allclose(moved[keep], full[keep], atol=1e-3), "the policy must differ for the test to mean much"


def test_branch_holds_only_the_top_blocks_norm_and_head() -> None:
    model = tiny_gptj()
    branch = FrozenBranch(model, 1)
    layers = transformer_layers(model)
    expected = sum(p.numel() for m in (layers[-1], final_norm(model), model.get_output_embeddings())
                   for p in m.parameters())
    assert sum(p.numel() for p in branch.parameters()) == expected < sum(p.numel() for p in model.parameters())
    assert not any(p.requires_grad for p in branch.parameters())
    with pytest.raises(ValueError, match="1..3 layers"):
        FrozenBranch(model, 4)


def test_tied_head_stays_frozen_and_hydra_refuses_a_training_trunk(tmp_path: Path) -> None:
    """trlx `freeze_bottom_causal_layers` freezes a tied LM head (it is the input embedding); a hydra branch is
    only the reference when nothing below it trains, so the trainer refuses otherwise."""
    tied = tiny_neox()
    tied.config.tie_word_embeddings = True
    tied.tie_weights()
    freeze_bottom_layers(tied, 1)
    assert not tied.get_input_embeddings().weight.requires_grad
    config = PPOConfig(seq_length=16, max_new_tokens=4, batch_size=2, num_rollouts=4, chunk_size=4,
                       num_layers_unfrozen=1, stop_sequences=())
    with pytest.raises(ValueError, match="hydra reference needs everything below the top 1 blocks frozen"):
        PPOTrainer(config, CausalLMWithValueHead(tiny_gptj()), None, CharTokenizer(), [[5, 6]], lambda i, t: None,
                   tmp_path)


def test_trainer_uses_the_hydra_branch_and_starts_at_zero_kl(tmp_path: Path) -> None:
    config = PPOConfig(seq_length=16, max_new_tokens=4, batch_size=2, num_rollouts=4, chunk_size=4, ppo_epochs=1,
                       total_steps=4, num_layers_unfrozen=1, stop_sequences=(), learning_rate=1e-2, lr_min=1e-3,
                       checkpoint_interval=1000)
    assert config.reference_kind == "hydra"
    assert config.model_copy(update={"hydra_reference": False}).reference_kind == "full_copy"
    model = tiny_gptj()
    freeze_bottom_layers(model, 1)

    def reward(indices: list[int], texts: list[str]) -> torch.Tensor:
        return torch.tensor([t.count("K") / max(len(t), 1) for t in texts])

    with pytest.raises(ValueError, match="takes no reference model"):
        PPOTrainer(config, CausalLMWithValueHead(model), tiny_gptj(), CharTokenizer(), [[5, 6]], reward, tmp_path)
    trainer = PPOTrainer(config, CausalLMWithValueHead(model), None, CharTokenizer(),
                         [[5, 6, 7], [8, 9], [10, 11, 12], [13]], reward, tmp_path, log=lambda _: None)
    assert trainer.reference is None and trainer.branch is not None
    history = trainer.train().steps
    assert abs(history[0]["kl_penalty"]) < 1e-5, "before any update the policy is its own reference"
    assert history[-1]["kl_penalty"] > 1e-4, "after updates the hydra reference stays put while the policy moves"
