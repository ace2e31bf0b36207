"""Step: the Detoxify scorer as an artifact, and how well it agrees with Perspective on held-out RTP texts.

`scorer: published` downloads Detoxify's published checkpoint (the recipe's `original`) once, so later steps
are offline and pinned; `checkpoint` imports a local one; `train_standin` (the offline demo) trains a small BERT
on the Perspective scores of RealToxicityPrompts records that are *not* among the evaluation prompts and
saves it in Detoxify's checkpoint format. Every mode then loads the artifact through Detoxify's own loading
code and reports ROC-AUC and correlations against Perspective on held-out records.

Inputs: channels `rtp_records` (records.parquet) and `rtp_prompts` (prompts.parquet, the evaluation prompts).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from rlhf_assets.eval.classifier_quality import correlations, roc_auc
from rlhf_assets.eval.degenerate_text import (
    DEGENERATE_PROBES,
    MAX_PROBE_SCORE,
    is_empty_or_punctuation,
    training_negatives,
    wordless_as_non_toxic,
)
from rlhf_assets.layouts import PROBE_SCORES, PROMPTS, RTP_RECORDS, TOXICITY_HELDOUT
from rlhf_assets.modeling.detoxify_format import (
    ORIGINAL_CLASSES,
    ToxicityModelError,
    import_checkpoint,
    import_published,
    load_detoxify,
    save_detoxify_checkpoint,
    toxicity_of,
)
from rlhf_assets.modeling.standin_vocabulary import standin_tokenizer
from rlhf_assets.specs import StandInToxicitySpec, ToxicitySpec
from rlhf_assets.step_contracts.base import Markdown
from rlhf_assets.step_contracts.evaluation import ToxicityModelReport, ToxicityModelRequest
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step

# Perspective attribute that supervises each of Detoxify's `original` classes.
PERSPECTIVE_FOR_CLASS = {"toxic": "toxicity", "severe_toxic": "severe_toxicity", "obscene": "profanity",
                         "threat": "threat", "insult": "insult", "identity_hate": "identity_attack"}
SCORER_FILE = "scorer.json"
STANDIN_NOTE = (
    "⚠ **Stand-in scorer.** No Detoxify weights can be downloaded offline, so this is a small BERT trained here "
    "on Perspective API scores of RealToxicityPrompts texts (never the evaluation prompts) and saved in "
    "Detoxify's checkpoint format. Its toxicity figures are *not* comparable with the recipe's (Detoxify "
    "`original`); use `scorer: published` or `checkpoint` for that."
)


def labelled_texts(records: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt or continuation text with its Perspective toxicity and the six class targets."""
    parts = []
    for part in ("prompt", "continuation"):
        frame = pd.DataFrame({"record": records.index, "text": records[f"{part}_text"],
                              "perspective_toxicity": records[f"{part}_toxicity"]})
        for cls, attribute in PERSPECTIVE_FOR_CLASS.items():
            frame[cls] = records[f"{part}_{attribute}"].to_numpy()
        parts.append(frame)
    texts = pd.concat(parts, ignore_index=True)
    return texts[texts["text"].str.strip().astype(bool) & texts["perspective_toxicity"].notna()]


def split_records(
    records: pd.DataFrame, eval_prompts: set[str], spec: StandInToxicitySpec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out) records, both disjoint from the evaluation prompts; the split is by record."""
    pool = records[~records["prompt_text"].isin(eval_prompts)]
    order = np.random.default_rng(spec.seed).permutation(len(pool))
    cut = int(len(pool) * spec.heldout_fraction)
    return pool.iloc[order[cut:]], pool.iloc[order[:cut]]


def with_degenerate_negatives(train: pd.DataFrame, spec: StandInToxicitySpec) -> pd.DataFrame:
    """The training texts plus `spec.degenerate_negatives` degenerate strings labelled non-toxic.

    Perspective never scored a lone "." or "and and and" (RTP has no such texts), so a stand-in trained on RTP
    alone rated punctuation at 0.5 and more. Text without a letter is scored 0 by rule (`score_texts`); these
    negatives teach the model the rest (a common word repeated), drawn from clearly non-toxic training texts.
    """
    calm = train.loc[train["perspective_toxicity"] < 0.1, "text"]
    words = pd.Series(" ".join(calm).lower().split()).value_counts()
    probe_words = {word for probe in DEGENERATE_PROBES for word in probe.split()}  # the probes stay unseen
    common = [w for w in words.index[:200] if w.isalpha() and w not in probe_words]
    texts = training_negatives(spec.degenerate_negatives, spec.seed, common)
    negatives = pd.DataFrame({"record": -1, "text": texts, "perspective_toxicity": 0.0,
                              **{cls: 0.0 for cls in ORIGINAL_CLASSES}})
    return pd.concat([train, negatives], ignore_index=True)


def train_standin(
    runtime: StepRuntime, spec: StandInToxicitySpec, train: pd.DataFrame
) -> tuple[BertForSequenceClassification, BertTokenizerFast]:
    """A small BERT with a WordPiece vocabulary fit on the training texts, soft multi-label BCE targets."""
    train = with_degenerate_negatives(train, spec)
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    tokenizer = standin_tokenizer(train["text"].tolist(), spec.vocab_size, spec.max_length)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=spec.hidden_size,
                        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                        intermediate_size=4 * spec.hidden_size, max_position_embeddings=spec.max_length,
                        num_labels=len(ORIGINAL_CLASSES), problem_type="multi_label_classification")
    model = BertForSequenceClassification(config)
    targets = torch.tensor(train[list(ORIGINAL_CLASSES)].to_numpy(dtype=float, na_value=np.nan), dtype=torch.float)
    known = ~targets.isnan()
    targets = targets.nan_to_num(0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
    texts = train["text"].tolist()
    runtime.log(f"stand-in toxicity model: {sum(p.numel() for p in model.parameters()):,} parameters, "
                f"{len(texts)} texts, {spec.epochs} epochs")
    model.train()
    for epoch in range(1, spec.epochs + 1):
        order, total = torch.randperm(len(texts)), 0.0
        for batch in order.split(spec.batch_size):
            inputs = tokenizer([texts[i] for i in batch], padding=True, truncation=True, return_tensors="pt")
            logits = model(**inputs).logits
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[batch], reduction="none")
            loss = (loss * known[batch]).sum() / known[batch].sum().clamp(min=1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item() * len(batch)
        runtime.log(f"epoch {epoch}/{spec.epochs}: train BCE {total / len(texts):.4f}")
    return model.eval(), tokenizer


def score_texts(scorer: Any, texts: list[str], batch_size: int, scorer_kind: str) -> list[float]:
    """Detoxify's toxicity of each text, with the stand-in's wordless-text rule when the scorer is the stand-in."""
    scores = toxicity_of(scorer, texts, batch_size)
    return wordless_as_non_toxic(texts, scores) if scorer_kind == "train_standin" else scores


def score_probes(scorer: Any, batch_size: int, scorer_kind: str) -> pd.DataFrame:
    """The scorer's toxicity for each fixed degenerate probe: what it says about text with nothing to judge."""
    probes = pd.DataFrame({"text": list(DEGENERATE_PROBES)})
    probes["detoxify_toxicity"] = score_texts(scorer, probes["text"].tolist(), batch_size, scorer_kind)
    return probes


def probe_table(probes: pd.DataFrame) -> str:
    """Markdown: each degenerate probe and its score, worst first."""
    lines = ["| probe | toxicity |", "|---|---|"]
    for row in probes.sort_values("detoxify_toxicity", ascending=False).itertuples():
        lines.append(f"| `{row.text!r}` | {row.detoxify_toxicity:.3f} |")
    return "\n".join(lines) + f"\n\nA scorer fit for generated text rates each at most {MAX_PROBE_SCORE}."


def build_artifact(runtime: StepRuntime, spec: ToxicitySpec, train: pd.DataFrame) -> None:
    """Write the Detoxify checkpoint + `hf/` folder for the configured scorer into the model dir."""
    out = runtime.model_dir
    if spec.scorer == "train_standin":
        model, tokenizer = train_standin(runtime, spec.standin, labelled_texts(train))
        save_detoxify_checkpoint(out, model, tokenizer, ORIGINAL_CLASSES)
    elif spec.scorer == "checkpoint":
        if not spec.checkpoint or not spec.huggingface_config_path:
            raise StepInputError("toxicity.scorer 'checkpoint' needs toxicity.checkpoint and "
                                 "toxicity.huggingface_config_path")
        import_checkpoint(Path(spec.checkpoint), Path(spec.huggingface_config_path), out)
    else:
        runtime.log(f"downloading Detoxify {spec.detoxify_model_type!r}")
        import_published(spec.detoxify_model_type, out)


def main(runtime: StepRuntime) -> None:
    """Build the scorer, load it the way Detoxify does, and measure it against Perspective."""
    spec = runtime.request(ToxicityModelRequest).toxicity
    records = runtime.read_table("rtp_records", RTP_RECORDS)
    eval_prompts = set(runtime.read_table("rtp_prompts", PROMPTS)["prompt_text"])
    train, heldout = split_records(records, eval_prompts, spec.standin)
    try:
        build_artifact(runtime, spec, train)
        scorer = load_detoxify(runtime.model_dir)
    except ToxicityModelError as exc:
        raise StepInputError(str(exc)) from None
    (runtime.model_dir / SCORER_FILE).write_text(json.dumps({"scorer": spec.scorer, "classes": scorer.class_names,
                                                             "wordless_rule": spec.scorer == "train_standin"}))
    scored = labelled_texts(heldout).reset_index(drop=True)
    scored["detoxify_toxicity"] = score_texts(scorer, scored["text"].tolist(), spec.score_batch_size, spec.scorer)
    TOXICITY_HELDOUT.write(scored[list(TOXICITY_HELDOUT.columns)], runtime.model_dir)
    auc = roc_auc(scored["perspective_toxicity"] >= 0.5, scored["detoxify_toxicity"])
    pearson, spearman = correlations(scored["perspective_toxicity"], scored["detoxify_toxicity"])
    runtime.log(f"held-out agreement with Perspective on {len(scored)} texts: ROC-AUC {auc:.3f}, "
                f"Pearson {pearson:.3f}, Spearman {spearman:.3f}")
    probes = score_probes(scorer, spec.score_batch_size, spec.scorer)
    PROBE_SCORES.write(probes, runtime.model_dir)
    worst = probes.loc[probes["detoxify_toxicity"].idxmax()]
    runtime.log(f"degenerate probes: highest score {worst['detoxify_toxicity']:.3f} for {worst['text']!r} "
                f"(check: at most {MAX_PROBE_SCORE})")
    note = STANDIN_NOTE if spec.scorer == "train_standin" else f"Detoxify scorer ({spec.scorer})."
    runtime.report(ToxicityModelReport(
        scorer=spec.scorer,
        classes=", ".join(scorer.class_names),
        heldout_roc_auc=auc,
        heldout_pearson=pearson,
        heldout_spearman=spearman,
        heldout_texts=len(scored),
        degenerate_probe_max=float(probes["detoxify_toxicity"].max()),
        degenerate_probe_mean=float(probes["detoxify_toxicity"].mean()),
        degenerate_probes_by_rule=int(sum(map(is_empty_or_punctuation, probes["text"])))
        if spec.scorer == "train_standin" else 0,
        degenerate_probes=Markdown(probe_table(probes)),
        summary=Markdown(f"**{spec.scorer}** scorer: held-out ROC-AUC {auc:.2f} against Perspective (toxicity ≥ "
                            f"0.5) on {len(scored)} RTP texts it never saw; Spearman {spearman:.2f}. Degenerate "
                            f"probes: highest {probes['detoxify_toxicity'].max():.3f} (check: ≤ {MAX_PROBE_SCORE})."
                            + (" Stand-in: text without a letter scores 0 by rule (Perspective never labelled "
                               "any); its toxicity values are not comparable with Detoxify's."
                               if spec.scorer == "train_standin" else "")),
        heldout_records=len(heldout),
        train_records=len(train),
        excluded_eval_prompts=len(eval_prompts),
        note=Markdown(f"{note}\n\nTrained on {len(train)} records; held out {len(heldout)} records "
                      f"({len(scored)} texts) for the figures above; the {len(eval_prompts)} `rtp_prompts` "
                      "are in neither."),
    ))


if __name__ == "__main__":
    run_step(main)
