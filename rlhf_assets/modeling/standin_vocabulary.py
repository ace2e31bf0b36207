"""The stand-in toxicity scorer's WordPiece vocabulary, built the same way in every process.

Its own module (tokenizers and transformers' tokenizer only) so a check that builds it in several fresh
interpreters does not pay for torch and the models.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def standin_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> BertTokenizerFast:
    """A BERT WordPiece vocabulary built from `texts` the same way in every run.

    `tokenizers`' WordPiece trainer breaks ties between equally frequent pieces by Rust hash-map order, which
    differs per process: the same texts gave different vocabularies, hence different stand-in scorers, run to
    run. This vocabulary is chosen by a total order instead: the special tokens, every character (alone and as
    a `##` continuation, so no text is ever unknown), then the most frequent whole words (count, then the word).
    """
    normalizer, splitter = BertNormalizer(lowercase=True), BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({character for word in counts for character in word})
    budget = max(0, vocab_size - len(SPECIAL_TOKENS) - 2 * len(characters))
    words = [word for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
             if count >= 2 and len(word) > 1][:budget]
    vocabulary = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters), *words]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.txt"
        path.write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
        return BertTokenizerFast(vocab=str(path), do_lower_case=True, model_max_length=max_length)
