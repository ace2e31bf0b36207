"""Padding, masking and batched generation of the PPO rollout code on a tiny GPT-NeoX."""

import pytest
import torch
from transformers import GPTNeoXForCausalLM

from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.sampling import (
    join_query_response,
    left_pad,
    response_logits,
    response_logprobs,
    right_pad,
    sample_responses,
)
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead, add_lora, freeze_bottom_layers
from tests.ppo_toys import CharTokenizer, tiny_neox

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model() -> GPTNeoXForCausalLM:
    return tiny_neox()


def _logprobs(model, queries, responses) -> list[list[float]]:
    q_ids, q_mask = left_pad(queries, 0)
    r_ids, r_mask = right_pad(responses, 0)
    ids, mask, positions = join_query_response(q_ids, q_mask, r_ids, r_mask)
    with torch.no_grad():
        logits, _ = response_logits(model, ids, mask, positions, r_ids.shape[1])
        full = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    logprobs = response_logprobs(logits, ids, r_ids.shape[1])
    q = q_ids.shape[1]
    assert torch.allclose(logits, full[:, q - 1: q - 1 + r_ids.shape[1]], atol=1e-5), "only response positions"
    return [row[: len(r)].tolist() for row, r in zip(logprobs, responses, strict=True)]


def test_left_padded_prompts_give_the_same_logprobs_as_unpadded(model) -> None:
    queries = [[5, 6, 7, 8, 9, 10, 11], [12, 13]]
    responses = [[20, 21, 1], [22, 23, 24, 25, 1]]
    batched = _logprobs(model, queries, responses)
    for query, response, row in zip(queries, responses, batched, strict=True):
        alone = _logprobs(model, [query], [response])[0]
        assert row == pytest.approx(alone, abs=1e-5)


def test_batched_generation_matches_one_prompt_at_a_time(model) -> None:
    queries = [[5, 6, 7, 8, 9], [12, 13]]
    kwargs = {"max_new_tokens": 6, "top_k": 0, "top_p": 1.0, "temperature": 1.0, "stop_sequences": (),
              "do_sample": False}
    batched = sample_responses(model, CharTokenizer(), queries, **kwargs)
    single = [sample_responses(model, CharTokenizer(), [q], **kwargs)[0] for q in queries]
    assert batched == single
    assert all(len(r) <= 6 and (r[-1] == 1 or len(r) == 6) for r in batched), "EOS unless capped at 6"


def test_layer_freezing_and_value_head(model) -> None:
    copy = GPTNeoXForCausalLM(model.config)
    trainable = freeze_bottom_layers(copy, 1)
    frozen = [n for n, p in copy.named_parameters() if not p.requires_grad]
    assert any(n.startswith("gpt_neox.layers.0.") for n in frozen) and "gpt_neox.embed_in.weight" in frozen
    assert all(p.requires_grad for n, p in copy.named_parameters() if n.startswith("gpt_neox.layers.1."))
    assert 0 < trainable < sum(p.numel() for p in copy.parameters())
    policy = CausalLMWithValueHead(copy)
    ids = torch.tensor([[5, 6, 7]])
    logits, values = policy(ids, torch.ones_like(ids), torch.arange(3).unsqueeze(0), 2)
    assert logits.shape == (1, 2, 40) and values.shape == (1, 2)
    with pytest.raises(ValueError, match=r"num_layers_unfrozen \(5\) exceeds the model's 2 layers"):
        freeze_bottom_layers(GPTNeoXForCausalLM(model.config), 5)


def test_lora_policy_trains_adapters_only_and_its_disabled_adapter_is_the_reference(model, tmp_path) -> None:
    base = GPTNeoXForCausalLM(model.config)
    base.load_state_dict(model.state_dict())
    lora = add_lora(base, rank=4, alpha=8.0)
    frozen_before = {n: p.clone() for n, p in lora.named_parameters() if "lora_" not in n}
    config = PPOConfig(seq_length=24, max_new_tokens=4, batch_size=2, num_rollouts=4, chunk_size=4, ppo_epochs=1,
                       total_steps=2, learning_rate=1e-2, lr_min=1e-3, stop_sequences=(), checkpoint_interval=2)
    tokenizer = CharTokenizer()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    def reward(indices: list[int], texts: list[str]) -> torch.Tensor:
        return torch.tensor([float(len(t)) for t in texts])

    trainer = PPOTrainer(config, CausalLMWithValueHead(lora), None, tokenizer, prompts, reward, tmp_path,
                         log=lambda _: None)
    assert len(trainer.train().steps) == 2
    for name, param in lora.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, frozen_before[name]), f"{name} changed: only adapters should train"
    ids = torch.tensor([[5, 6, 7, 8]])
    mask, positions = torch.ones_like(ids), torch.arange(4).unsqueeze(0)
    with torch.no_grad():
        reference = trainer._reference_logits(ids, mask, positions, 2)
        expected, _ = response_logits(model, ids, mask, positions, 2)
        adapted, _ = response_logits(lora, ids, mask, positions, 2)
    assert torch.allclose(reference, expected, atol=1e-5), "disabled adapters give the SFT model's logits"
    assert not torch.allclose(adapted, expected, atol=1e-5), "the adapters did learn something"
