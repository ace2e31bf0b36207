"""Where reward models are read, pinned to the reference code, on tiny random checkpoints.

The recipe's reward model is `Dahoas/gptj-rm-static`: a bare state dict (`hf_ckpt.pt`) of GPT-J's trunk under
`transformer.` plus a bias-free `v_head`, written by Dahoas's reward-modeling `utils.py` after training with
`reward_models.py` `RewardModel` on `prompt + chosen + "<|endoftext|>"`. trlx's `examples/hh/ppo_hh.py` reads it
with its own `RewardModel.forward` (CarperAI/trlx @ 3340c2f):

    states = self.transformer(input_ids)[0]
    rewards = self.v_head(states).squeeze(-1)
    ends = torch.argmax((input_ids == self.eos_token_id).float(), dim=1).view(-1, 1)
    returns = torch.gather(rewards, 1, ends).squeeze(-1)

after `reward_fn` appended `reward_tokenizer.eos_token` to every sample and to `prompt + original_output`.
`trlx_reward` below is that forward, transcribed.
"""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForSequenceClassification,
    PreTrainedTokenizerFast,
)
from trl import RewardConfig

from rlhf_assets.modeling.reward_model import (
    RewardModelScorer,
    RewardReadout,
    eos_readout,
    load_trlx_reward_model,
    reward_scores,
)
from rlhf_assets.modeling.tokenizer import train_bpe_tokenizer
from rlhf_assets.ppo.rewards import DeltaReward
from rlhf_assets.steps.reward import EosReadRewardTrainer

pytestmark = pytest.mark.unit

TEXTS = ["\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast, then knead it.",
         "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital of France."] * 4


@pytest.fixture(scope="module")
def gptj_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-J's tokenizer family: byte-level BPE, `<|endoftext|>` as EOS, and no pad token (so pad = EOS)."""
    tokenizer = train_bpe_tokenizer(TEXTS, vocab_size=300)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture(scope="module")
def gptj_rm_static(tmp_path_factory, gptj_tokenizer) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A tiny random GPT-J and a reward checkpoint over it in the published `gptj-rm-static` format."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("trlx")
    config = GPTJConfig(vocab_size=len(gptj_tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                        rotary_dim=4, eos_token_id=gptj_tokenizer.eos_token_id,
                        bos_token_id=gptj_tokenizer.eos_token_id)
    trunk_dir = root / "gpt-j-tiny"
    causal = GPTJForCausalLM(config)
    causal.save_pretrained(trunk_dir)
    state = {f"transformer.{k}": v for k, v in causal.transformer.state_dict().items()}
    state["v_head.weight"] = torch.randn(1, config.n_embd)
    rm_dir = root / "gptj-rm-static"
    rm_dir.mkdir()
    torch.save(state, rm_dir / "hf_ckpt.pt")
    return rm_dir, trunk_dir, state


def head_outputs(trunk_dir: Path, state: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    """`self.v_head(states).squeeze(-1)` of trlx's `RewardModel.forward`: the head at every position."""
    causal = GPTJForCausalLM.from_pretrained(trunk_dir)
    causal.transformer.load_state_dict({k[len("transformer."):]: v for k, v in state.items() if k != "v_head.weight"})
    with torch.no_grad():
        states = causal.transformer(torch.tensor([ids]))[0]
        return (states @ state["v_head.weight"].T).squeeze(-1)


def trlx_reward(trunk_dir: Path, state: dict[str, torch.Tensor], ids: list[int], eos_token_id: int) -> float:
    """trlx `examples/hh/ppo_hh.py` `RewardModel.forward` on one sequence: v_head at the first EOS."""
    input_ids = torch.tensor([ids])
    rewards = head_outputs(trunk_dir, state, ids)
    ends = torch.argmax((input_ids == eos_token_id).float(), dim=1).view(-1, 1)
    return float(torch.gather(rewards, 1, ends).squeeze(-1))


def test_published_format_is_read_at_the_eos_after_the_response(gptj_rm_static, gptj_tokenizer) -> None:
    """`reward_fn` + `RewardModel.forward`: prompt + response + EOS, read at that EOS, for samples and the delta's
    chosen baseline alike; the converted model scores exactly `v_head(h)[first EOS]`."""
    rm_dir, trunk_dir, state = gptj_rm_static
    eos = gptj_tokenizer.eos_token_id
    model = load_trlx_reward_model(str(rm_dir), str(trunk_dir), pad_token_id=gptj_tokenizer.pad_token_id)
    scorer = RewardModelScorer(model, gptj_tokenizer, readout=eos_readout(eos), max_length=128,
                               max_response_tokens=64)
    prompts = ["\n\nHuman: How do I bake bread?\n\nAssistant:", "\n\nHuman: What is the capital?\n\nAssistant:"]
    samples, chosen = [" Knead it.", " Paris, I think, is it."], [" Mix flour and water.", " Paris."]

    def expected(prompt: str, response: str) -> float:
        return trlx_reward(trunk_dir, state, gptj_tokenizer(prompt + response + gptj_tokenizer.eos_token)
                           ["input_ids"], eos)

    assert scorer.score(prompts, samples).tolist() == pytest.approx(
        [expected(p, s) for p, s in zip(prompts, samples, strict=True)], abs=1e-5)
    delta = DeltaReward(scorer, prompts, chosen)([0, 1], samples)
    assert delta.tolist() == pytest.approx(
        [expected(p, s) - expected(p, c) for p, s, c in zip(prompts, samples, chosen, strict=True)], abs=1e-5)


def test_hugging_face_pooling_with_pad_eos_reads_one_token_early(gptj_rm_static, gptj_tokenizer) -> None:
    """The defect this pins: the classifier's own forward, with pad = EOS, reads the last *content* token."""
    rm_dir, trunk_dir, state = gptj_rm_static
    eos = gptj_tokenizer.eos_token_id
    model = load_trlx_reward_model(str(rm_dir), str(trunk_dir), pad_token_id=eos)
    ids = gptj_tokenizer(TEXTS[0])["input_ids"] + [eos]
    ours = float(reward_scores(model, [ids], eos_readout(eos))[0])
    assert ours == pytest.approx(trlx_reward(trunk_dir, state, ids, eos), abs=1e-5)
    with torch.no_grad():
        pooled_by_pad = float(model(input_ids=torch.tensor([ids])).logits[0, 0])
    last_content_token = float(head_outputs(trunk_dir, state, ids)[0, -2])
    assert pooled_by_pad == pytest.approx(last_content_token, abs=1e-5)
    assert abs(pooled_by_pad - ours) > 1e-3


def test_a_sequence_without_its_eos_is_refused(gptj_rm_static, gptj_tokenizer) -> None:
    rm_dir, trunk_dir, _ = gptj_rm_static
    model = load_trlx_reward_model(str(rm_dir), str(trunk_dir), pad_token_id=gptj_tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="does not end with EOS"):
        reward_scores(model, [gptj_tokenizer(TEXTS[0])["input_ids"]], eos_readout(gptj_tokenizer.eos_token_id))


def test_trained_reward_models_train_and_score_at_the_same_position(tmp_path: Path, gptj_tokenizer) -> None:
    """The Bradley-Terry loss of `EosReadRewardTrainer` uses exactly the rewards the scorer later reads."""
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=len(gptj_tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, num_labels=1,
                           pad_token_id=gptj_tokenizer.pad_token_id, eos_token_id=gptj_tokenizer.eos_token_id)
    model = GPTNeoXForSequenceClassification(config)
    eos = gptj_tokenizer.eos_token_id
    chosen = [gptj_tokenizer(t)["input_ids"] + [eos] for t in TEXTS[:2]]
    rejected = [gptj_tokenizer(t[:40])["input_ids"] + [eos] for t in TEXTS[:2]]
    pairs = Dataset.from_list([{"chosen_ids": c, "rejected_ids": r} for c, r in zip(chosen, rejected, strict=True)])
    args = RewardConfig(output_dir=str(tmp_path), max_length=None, report_to=[], use_cpu=True)
    trainer = EosReadRewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=gptj_tokenizer)
    batch = trainer.data_collator([pairs[0], pairs[1]])
    loss, outputs = trainer.compute_loss(model.eval(), batch, return_outputs=True)
    readout = eos_readout(eos)
    scored = reward_scores(model, chosen + rejected, readout)
    assert outputs["rewards"].detach().tolist() == pytest.approx(scored.tolist(), abs=1e-5)
    expected_loss = -torch.nn.functional.logsigmoid(scored[:2] - scored[2:]).mean()
    assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-5)


def test_readout_round_trips_through_the_artifact_record() -> None:
    readout = eos_readout(50256)
    assert RewardReadout.model_validate_json(readout.model_dump_json()) == readout
    assert readout.append_eos and "ppo_hh.py" in readout.reference
    with pytest.raises(ValueError, match="needs a tokenizer with an EOS"):
        eos_readout(None)


def test_not_a_reward_checkpoint_is_rejected(gptj_rm_static, tmp_path: Path) -> None:
    _, trunk_dir, state = gptj_rm_static
    (tmp_path / "rm").mkdir()
    torch.save({k: v for k, v in state.items() if k != "v_head.weight"}, tmp_path / "rm" / "hf_ckpt.pt")
    with pytest.raises(ValueError, match="key 'v_head.weight' is missing"):
        load_trlx_reward_model(str(tmp_path / "rm"), str(trunk_dir), pad_token_id=0)


def test_directory_without_weights_is_rejected(tmp_path: Path, gptj_rm_static) -> None:
    _, trunk_dir, _ = gptj_rm_static
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no trlx reward checkpoint \(\*\.pt or \*\.bin\)"):
        load_trlx_reward_model(str(tmp_path / "empty"), str(trunk_dir), pad_token_id=0)


def test_a_saved_classifier_reloads_with_the_same_readout(tmp_path: Path, gptj_rm_static, gptj_tokenizer) -> None:
    """The converted model is saved as a Hugging Face classifier; reloaded, it scores the same at the EOS."""
    rm_dir, trunk_dir, _ = gptj_rm_static
    model = load_trlx_reward_model(str(rm_dir), str(trunk_dir), pad_token_id=gptj_tokenizer.pad_token_id)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    ids = [gptj_tokenizer(t)["input_ids"] + [gptj_tokenizer.eos_token_id] for t in TEXTS[:2]]
    readout = eos_readout(gptj_tokenizer.eos_token_id)
    assert reward_scores(reloaded, ids, readout).tolist() == pytest.approx(reward_scores(model, ids, readout).tolist())
