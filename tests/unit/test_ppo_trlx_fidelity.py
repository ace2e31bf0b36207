"""Our PPO against trlx's source, one behaviour per test. Expected values are worked out by hand from the trlx
function each test names (CarperAI/trlx @ 3340c2f), not read back from our own code."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rlhf_assets.modeling.reward_model import RewardModelScorer, eos_readout
from rlhf_assets.ppo.advantages import whiten
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.distributed import global_masked_moments
from rlhf_assets.ppo.rewards import DeltaReward, RewardScaler
from rlhf_assets.ppo.rollout import Experience
from rlhf_assets.ppo.sampling import finish_response
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead
from tests.ppo_toys import CharTokenizer, tiny_neox

pytestmark = pytest.mark.unit

EOS = eos_readout(CharTokenizer.eos_token_id)
PROMPTS = [[2 + (i * 5 + j) % 20 for j in range(2 + i % 3)] for i in range(8)]


def toy_reward(indices: list[int], texts: list[str]) -> torch.Tensor:
    return torch.tensor([t.count("K") / max(len(t), 1) for t in texts])


def test_beta_moves_once_per_ppo_epoch_by_batch_size(tmp_path: Path) -> None:
    """trlx `AccelerateRLTrainer.learn` calls `post_backward_callback` after each PPO epoch's minibatches, and
    `AcceleratePPOTrainer.post_backward_callback` does `kl_ctl.update(self.mean_kl, n_steps=batch_size)`.

    One phase here: 8 rollouts, batch 2 → 4 optimizer steps per epoch, 4 epochs. At the start the policy is the
    reference, so the KL is ~0 and the proportional error clips to −0.2: after the phase
    β = 0.05 · (1 − 0.2 · 2 / 100)⁴ (trlx), not (1 − 0.2 · 2 / 100)¹⁶ (one update per optimizer step).
    """
    config = PPOConfig(seq_length=16, max_new_tokens=4, batch_size=2, num_rollouts=8, chunk_size=4, ppo_epochs=4,
                       total_steps=17, init_kl_coef=0.05, target=6.0, horizon=100, stop_sequences=(),
                       learning_rate=1e-6, lr_min=1e-6, num_layers_unfrozen=-1, checkpoint_interval=1000)
    trainer = PPOTrainer(config, CausalLMWithValueHead(tiny_neox()), tiny_neox(), CharTokenizer(), PROMPTS,
                         toy_reward, tmp_path, log=lambda _: None)
    history = trainer.train().steps
    first_phase_kl = history[0]["kl_penalty"]
    assert abs(first_phase_kl) < 0.2 * 6.0, "the error must clip for this hand computation"
    step = 1 - 0.2 * 2 / 100
    betas = [h["kl_coef"] for h in history]
    # Steps 1–4 run before any update, 5–8 after one, …, 13–16 after three; step 17 (next phase) after four.
    expected = [0.05 * step ** (i // 4) for i in range(16)] + [0.05 * step**4]
    assert betas == pytest.approx(expected, rel=1e-9)
    assert betas[-1] != pytest.approx(0.05 * step**16, rel=1e-6)


def test_raw_scores_are_clipped_before_the_running_moments_and_the_scaling() -> None:
    """trlx `AcceleratePPOTrainer.make_experience`, per chunk: `scores = clip(scores, ±cliprange_reward)`, then
    `running_moments.update(scores)`, then `scores /= running_moments.std` (trlx `RunningMoments`: unbiased std
    over everything seen). An outlier of 100 counts as 10 in the std and in the reward."""
    scaler = RewardScaler("running", cliprange_reward=10.0)
    first = scaler(torch.tensor([1.0, 3.0, 100.0]))
    # Clipped chunk [1, 3, 10]: mean 14/3, unbiased variance (121/9 + 25/9 + 256/9) / 2 = 201/9.
    std_1 = math.sqrt(201 / 9)
    assert first.tolist() == pytest.approx([1 / std_1, 3 / std_1, 10 / std_1])
    second = scaler(torch.tensor([-50.0, 2.0]))
    # Everything seen, clipped: [1, 3, 10, −10, 2]: mean 1.2, unbiased variance 206.8 / 4.
    std_2 = math.sqrt(206.8 / 4)
    assert second.tolist() == pytest.approx([-10 / std_2, 2 / std_2])
    assert scaler.moments.mean == pytest.approx(1.2)


def test_ref_scaling_takes_the_first_chunks_std_when_none_is_given() -> None:
    """trlx `make_experience`: `if self.ref_mean is None: ref_mean, ref_std = scores.mean(), scores.std()` on the
    first chunk's clipped scores, then every chunk is divided by that `ref_std`."""
    scaler = RewardScaler("ref", cliprange_reward=10.0)
    scaler(torch.tensor([1.0, 3.0, 100.0]))
    assert scaler.ref_std == pytest.approx(math.sqrt(201 / 9))
    assert scaler(torch.tensor([4.0])).tolist() == pytest.approx([4 / math.sqrt(201 / 9)])
    assert RewardScaler("ref", 10.0, ref_std=2.0)(torch.tensor([4.0, -30.0])).tolist() == [2.0, -5.0]


@pytest.mark.parametrize(
    ("sampled", "expected", "why"),
    [
        ([2, 3, 1, 0], [2, 3, 1], "ended naturally: the sampled EOS stays, padding goes"),
        ([2, 3, 4, 5], [2, 3, 4, 5], "cut by max_new_tokens: every sampled token kept, no EOS added"),
        ([2, 23, 24, 5], [2, 1], "trimmed at the stop sequence 'XY': re-tokenized prefix + EOS"),
        ([23, 24, 1, 0], [1], "a stop sequence right away: only the EOS"),
    ],
)
def test_eos_only_for_natural_ends_and_stop_sequence_trims(sampled: list[int], expected: list[int], why: str) -> None:
    """trlx `AccelerateRLTrainer.decode(append_eos_token=True)`: EOS is appended when the output was trimmed at a
    stop sequence or the sample's last token is EOS/pad (it ended before `max_new_tokens`), never otherwise."""
    assert finish_response(sampled, CharTokenizer(), ("XY",), max_new_tokens=4) == expected, why


def test_length_capped_generation_keeps_all_its_tokens() -> None:
    """RealToxicityPrompts asks for 20-token continuations: a capped sample keeps all 20 (it used to keep 19)."""
    sampled = [2 + i % 20 for i in range(20)]
    assert len(finish_response(sampled, CharTokenizer(), (), max_new_tokens=20)) == 20


class LengthRewardModel(nn.Module):
    """A stand-in reward model whose head reads, at each position, how many tokens it has seen so far: the score
    read at the EOS is the length of what was scored."""

    def __init__(self, context: int) -> None:
        super().__init__()
        self.score = nn.Identity()
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"max_position_embeddings": context})()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> None:
        self.score(attention_mask.cumsum(1).float().unsqueeze(-1))


class SizedCharTokenizer(CharTokenizer):
    model_max_length = 1_000_000_000_000  # "no limit", as HF writes it


def test_delta_baseline_scores_the_whole_chosen_response() -> None:
    """trlx `examples/hh/ppo_hh.py` `reward_fn`: `original_samples = prompt + original_output + eos`, tokenized
    with `truncation_side="left"` up to the reward tokenizer's length, i.e. the whole chosen response."""
    scorer = RewardModelScorer(LengthRewardModel(context=48), SizedCharTokenizer(), readout=EOS,
                               max_length=16, max_response_tokens=6)
    chosen_30, chosen_60 = "B" * 30, "C" * 60
    delta = DeltaReward(scorer, ["DEF", "DEF"], [chosen_30, chosen_60])
    scores = delta([0, 1], ["GHIJK", "GHIJK"]).tolist()
    # Sample: 3 prompt + 5 response + EOS = 9 tokens. Baselines: 3 + 30 + EOS = 34 tokens (the old code cut the
    # chosen response to 6 tokens: 10); a 60-token chosen response fills the RM's 48-token context.
    assert scores == [9 - 34, 9 - 48]
    trained_on_40 = RewardModelScorer(LengthRewardModel(context=48), SizedCharTokenizer(), readout=EOS,
                                      max_length=16, max_response_tokens=6, trained_length=40)
    assert trained_on_40.score(["DEF"], [chosen_60], whole_response=True).tolist() == [40]


def test_minibatch_whitening_counts_the_minibatchs_own_padding() -> None:
    """trlx `PPOConfig.get_advantages_and_returns(use_whitening=True)` whitens inside `loss()` with
    `trlx.utils.modeling.whiten` (`torch.var_mean`: every element, unbiased variance) over the minibatch as
    `ppo_collate_fn` pads it (to its own longest response), so padded positions (advantage 0) count."""
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    mask = (ids != 0).long()
    advantages = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    zeros = torch.zeros(2, 4)
    batch = Experience(torch.tensor([[2], [3]]), torch.ones(2, 1), ids, mask, zeros, zeros, zeros, zeros,
                       torch.zeros(2)).trimmed()
    assert batch.response_ids.tolist() == [[5, 6], [7, 0]], "cut to the minibatch's longest response"
    kept = advantages[:, : batch.response_ids.shape[1]]
    whitened = whiten(kept, torch.ones_like(kept), moments=global_masked_moments(_SingleProcess(), kept,
                                                                                   torch.ones_like(kept)))
    # Elements [1, 2, 3, 0]: mean 1.5, unbiased variance (0.25 + 0.25 + 2.25 + 2.25) / 3 = 5/3.
    expected = [[(x - 1.5) / math.sqrt(5 / 3) for x in row] for row in [[1.0, 2.0], [3.0, 0.0]]]
    assert whitened.tolist() == [pytest.approx(row, rel=1e-6) for row in expected]
    assert PPOConfig().advantage_whitening == "minibatch", "trlx's whitening is the default"


class _SingleProcess:
    num_processes = 1
