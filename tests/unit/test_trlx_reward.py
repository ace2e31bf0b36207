"""The trlx `GPTRewardModel` loader, on a tiny random GPT-J saved exactly as `Dahoas/gptj-rm-static` is."""

from pathlib import Path

import pytest
import torch
from transformers import GPTJConfig, GPTJForCausalLM

from rlhf_assets.modeling.scoring import reward_scores
from rlhf_assets.modeling.trlx_reward import load_trlx_reward_model

pytestmark = pytest.mark.unit

PAD = 0


@pytest.fixture()
def trlx_checkpoint(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = GPTJConfig(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)
    trunk_dir = tmp_path / "gpt-j-tiny"
    causal = GPTJForCausalLM(config)
    causal.save_pretrained(trunk_dir)
    state = {f"transformer.{k}": v for k, v in causal.transformer.state_dict().items()}
    state["v_head.weight"] = torch.randn(1, config.n_embd)
    rm_dir = tmp_path / "gptj-rm-static"
    rm_dir.mkdir()
    torch.save(state, rm_dir / "hf_ckpt.pt")
    return rm_dir, trunk_dir, state


def _trlx_reward(trunk_dir: Path, state: dict[str, torch.Tensor], ids: list[int]) -> float:
    """What trlx computes: v_head over the trunk's hidden states, read at the last token."""
    causal = GPTJForCausalLM.from_pretrained(trunk_dir)
    causal.transformer.load_state_dict({k[len("transformer."):]: v for k, v in state.items() if k != "v_head.weight"})
    with torch.no_grad():
        hidden = causal.transformer(torch.tensor([ids]))[0]
        return float(hidden[0, -1] @ state["v_head.weight"][0])


def test_converted_model_scores_like_trlx(trlx_checkpoint) -> None:
    rm_dir, trunk_dir, state = trlx_checkpoint
    model = load_trlx_reward_model(str(rm_dir), str(trunk_dir), pad_token_id=PAD)
    sequences = [[5, 9, 14, 3], [7, 7, 21, 30, 2, 11]]
    scores = reward_scores(model, sequences, pad_token_id=PAD)
    expected = [_trlx_reward(trunk_dir, state, seq) for seq in sequences]
    assert scores.tolist() == pytest.approx(expected, abs=1e-4)


def test_not_a_reward_checkpoint_is_rejected(trlx_checkpoint) -> None:
    rm_dir, trunk_dir, state = trlx_checkpoint
    torch.save({k: v for k, v in state.items() if k != "v_head.weight"}, rm_dir / "hf_ckpt.pt")
    with pytest.raises(ValueError, match="key 'v_head.weight' is missing"):
        load_trlx_reward_model(str(rm_dir), str(trunk_dir), pad_token_id=PAD)


def test_directory_without_weights_is_rejected(tmp_path: Path, trlx_checkpoint) -> None:
    _, trunk_dir, _ = trlx_checkpoint
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no trlx reward checkpoint \(\*\.pt or \*\.bin\)"):
        load_trlx_reward_model(str(tmp_path / "empty"), str(trunk_dir), pad_token_id=PAD)
