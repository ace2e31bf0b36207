"""Batched Detoxify scoring (what `toxicity_scores` does) vs one text at a time, side by side.

Scores RealToxicityPrompts continuations from `../shared/data/rtp` with a Detoxify checkpoint: the stand-in
scorer trained here for one epoch (its speed does not depend on its accuracy), or `--artifact DIR`, a
`toxicity_model` artifact directory (e.g. one holding Detoxify `original`). Prints texts/s of each and the ratio.

    .venv/bin/python -m bench.toxicity [--texts 512] [--batch-size 64] [--repeats 3] [--artifact DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rlhf_assets.data.rtp import read_rtp
from rlhf_assets.modeling.detoxify_format import ORIGINAL_CLASSES, load_detoxify, save_detoxify_checkpoint, toxicity_of
from rlhf_assets.presets import SHARED_RTP_DIR, StandInToxicitySpec
from rlhf_assets.steps.toxicity_model import labelled_texts, train_standin


class _PrintLog:
    def log(self, message: str) -> None:
        print(message, flush=True)


def _texts_per_second(scorer: Any, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    toxicity_of(scorer, texts, batch_size)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--artifact", type=Path, default=None)
    args = parser.parse_args()
    records = pd.DataFrame([row.as_row() for row in read_rtp(str(SHARED_RTP_DIR))])
    texts = records["continuation_text"].head(args.texts).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact
        if artifact is None:
            artifact = Path(tmp)
            model, tokenizer = train_standin(_PrintLog(), StandInToxicitySpec(epochs=1), labelled_texts(records))
            save_detoxify_checkpoint(artifact, model, tokenizer, ORIGINAL_CLASSES)
        scorer = load_detoxify(artifact)
        batched, single = [], []
        for repeat in range(args.repeats):
            order = [("batched", args.batch_size), ("single", 1)]
            for name, size in order if repeat % 2 == 0 else order[::-1]:
                rate = _texts_per_second(scorer, texts, size)
                (batched if name == "batched" else single).append(rate)
                print(f"repeat {repeat + 1}: {name:7s} (batch {size:3d}) {rate:8.1f} texts/s", flush=True)
    print(f"\n{len(texts)} RTP continuations, Detoxify predict")
    print(f"batched (batch {args.batch_size}): median {statistics.median(batched):.1f} texts/s")
    print(f"one text at a time: median {statistics.median(single):.1f} texts/s")
    print(f"ratio: {statistics.median(b / s for b, s in zip(batched, single, strict=True)):.1f}x")


if __name__ == "__main__":
    main()
