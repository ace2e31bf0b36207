"""PPO building blocks against hand-computed values."""

import math

import pytest
import torch

from rlhf_assets.eval.bootstrap import paired_bootstrap_mean_difference
from rlhf_assets.ppo.advantages import gae, whiten
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.kl_controller import AdaptiveKLController, FixedKLController, make_kl_controller
from rlhf_assets.ppo.losses import policy_loss, value_loss
from rlhf_assets.ppo.rewards import RunningMoments, per_token_rewards
from rlhf_assets.ppo.sampling import truncate_at_stop

pytestmark = pytest.mark.unit


def test_gae_on_a_short_sequence() -> None:
    values = torch.tensor([[0.5, 1.0, 2.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    mask = torch.ones(1, 3)
    advantages, returns = gae(values, rewards, mask, gamma=1.0, lam=0.5)
    # δ2 = 1 − 2 = −1; δ1 = 0 + 2 − 1 = 1; δ0 = 0 + 1 − 0.5 = 0.5
    # A2 = −1; A1 = 1 + 0.5·(−1) = 0.5; A0 = 0.5 + 0.5·0.5 = 0.75
    assert advantages[0].tolist() == pytest.approx([0.75, 0.5, -1.0])
    assert returns[0].tolist() == pytest.approx([1.25, 1.5, 1.0])


def test_gae_ignores_padding_after_the_response() -> None:
    values = torch.tensor([[1.0, 2.0, 9.0]])
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    advantages, _ = gae(values, rewards, mask, gamma=0.9, lam=1.0)
    # A1 = 1 − 2 = −1 (no bootstrap from the padded position); A0 = 0 + 0.9·2 − 1 + 0.9·(−1) = −0.1
    assert advantages[0].tolist() == pytest.approx([-0.1, -1.0, 0.0])


def test_whitening_uses_only_masked_positions() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # mean 2, unbiased std 1
    assert w[0, 3] == 0
    assert whiten(x, mask, shift_mean=False)[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)


def test_policy_loss_inside_and_beyond_the_clip_range() -> None:
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    inside = policy_loss(torch.log(torch.tensor([[1.1, 0.9]])), old, adv, mask, cliprange=0.2)
    assert inside.loss.item() == pytest.approx((-1.1 + 0.9) / 2)
    assert inside.clip_fraction == 0.0
    beyond = policy_loss(torch.log(torch.tensor([[1.5, 0.5]])), old, adv, mask, cliprange=0.2)
    # token 0: max(−1.5, −1.2) = −1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped)
    assert beyond.loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert beyond.clip_fraction == 1.0
    assert beyond.approx_kl == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2, rel=1e-5)


def test_value_loss_clips_at_the_range() -> None:
    mask = torch.ones(1, 2)
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    at_edge = value_loss(torch.tensor([[0.2, 0.1]]), old, returns, mask, cliprange_value=0.2)
    assert at_edge.loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert at_edge.clip_fraction == 0.0
    beyond = value_loss(torch.tensor([[0.5, -0.5]]), old, returns, mask, cliprange_value=0.2)
    # token 0: max(0.25, (0.2−1)² = 0.64) = 0.64; token 1: max(2.25, (−0.2−1)² = 1.44) = 2.25
    assert beyond.loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)
    assert beyond.clip_fraction == 0.5


def test_adaptive_kl_controller_follows_the_recipe_formula() -> None:
    controller = AdaptiveKLController(value=0.05, target=6.0, horizon=10000)
    controller.update(current_kl=9.0, n_steps=4)  # err = clip(0.5, ±0.2) = 0.2
    assert controller.value == pytest.approx(0.05 * (1 + 0.2 * 4 / 10000))
    controller.update(current_kl=5.4, n_steps=100)  # err = −0.1
    assert controller.value == pytest.approx(0.05 * (1 + 0.2 * 4 / 10000) * (1 - 0.1 * 100 / 10000))
    fixed = make_kl_controller(0.1, None, 10000)
    fixed.update(100.0, 1000)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.1


def test_running_moments_match_a_direct_computation() -> None:
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 3.0]))
    assert moments.mean == pytest.approx(2.0) and moments.std == pytest.approx(math.sqrt(2.0))
    moments.update(torch.tensor([5.0, 7.0]))
    assert moments.mean == pytest.approx(4.0)
    assert moments.std == pytest.approx(torch.tensor([1.0, 3.0, 5.0, 7.0]).std().item())


def test_per_token_rewards_put_the_score_on_the_last_response_token() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = per_token_rewards(torch.tensor([2.0, -1.0]), logprobs, ref, mask, kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, 0.0, -1.0, 1.0, 0.0, 0.0])
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 0.0, 0.1 + 2.0, -0.1, -1.0, 0.0])


def test_stop_sequences_truncate_the_response() -> None:
    stops = ("Human:", "human:", "Assistant:", "assistant:")
    assert truncate_at_stop(" Sure, here it is.\n\nHuman: thanks", stops) == " Sure, here it is."
    assert truncate_at_stop(" ok assistant: again", stops) == " ok"
    assert truncate_at_stop(" no stop here", stops) == " no stop here"


def test_config_that_cannot_work_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"chunk_size \(32\) must not exceed num_rollouts \(16\)"):
        PPOConfig(num_rollouts=16, chunk_size=32, batch_size=4)
    with pytest.raises(ValueError, match="target"):
        PPOConfig(target=-1.0)
    with pytest.raises(ValueError, match=r"max_new_tokens \(256\) must be below seq_length \(128\)"):
        PPOConfig(seq_length=128, max_new_tokens=256)


def test_paired_bootstrap_interval() -> None:
    a = [0.0] * 50
    b = [1.0] * 25 + [0.0] * 25
    interval = paired_bootstrap_mean_difference(a, b, resamples=4000, seed=1)
    assert interval.estimate == 0.5 and interval.low > 0.3 and interval.high < 0.7 and interval.excludes_zero
    flat = paired_bootstrap_mean_difference([0.0, 1.0] * 20, [1.0, 0.0] * 20, resamples=2000)
    assert not flat.excludes_zero
