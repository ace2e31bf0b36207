"""A character tokenizer and a tiny random GPT-NeoX: enough to run the PPO code without any download."""

import torch
from transformers import GPTJConfig, GPTJForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM


class CharTokenizer:
    """Just enough tokenizer for sampling: ids are their own text, 0 is pad, 1 is EOS."""

    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(65 + i) for i in ids if i > 1)

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(r) for r in rows]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - 65 for c in text]}


def tiny_neox(seed: int = 0) -> GPTNeoXForCausalLM:
    """Two layers, 32 wide, 40 ids: the same weights for the same seed on every process."""
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, pad_token_id=0, eos_token_id=1)
    return GPTNeoXForCausalLM(config).eval()


def tiny_gptj(seed: int = 0) -> GPTJForCausalLM:
    """The recipe's architecture (GPT-J: rotary, parallel attention/MLP, untied head) at toy size."""
    torch.manual_seed(seed)
    config = GPTJConfig(vocab_size=40, n_embd=32, n_layer=3, n_head=4, rotary_dim=4, n_positions=64,
                        pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return GPTJForCausalLM(config).eval()
