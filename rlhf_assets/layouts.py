"""Where each asset's tables live in its artifact directory, which columns they must have, and how to read them.

One place for artifact layouts, shared by the asset that writes a table, the step programs and checks that read
it, and tests: a renamed file or column is changed here once. Reading through `Table.read` fails with the
artifact's file and the missing columns named, rather than with a KeyError deep in a step. No Dagster import:
step programs use it in their containers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class LayoutError(ValueError):
    """An artifact directory does not hold the table its asset should have written."""


@dataclass(frozen=True)
class Table:
    """A Parquet table in an artifact: its file name and the columns every reader may rely on."""

    file: str
    columns: tuple[str, ...]

    def path(self, directory: Path) -> Path:
        return Path(directory) / self.file

    def read(self, directory: Path) -> pd.DataFrame:
        """The table, checked to have its columns; the error names the file and what is missing."""
        path = self.path(directory)
        if not path.is_file():
            raise LayoutError(f"{path} is missing: {directory} is not the artifact this input should be")
        frame = pd.read_parquet(path)
        missing = [column for column in self.columns if column not in frame.columns]
        if missing:
            raise LayoutError(f"{path} has no column(s) {', '.join(missing)}: it was written by an older version; "
                              "re-materialize the asset that wrote it")
        return frame

    def write(self, frame: pd.DataFrame, directory: Path) -> Path:
        """Write the table, refusing one without its columns (a writer's bug, found before anyone reads it)."""
        missing = [column for column in self.columns if column not in frame.columns]
        if missing:
            raise LayoutError(f"refusing to write {self.file} without column(s) {', '.join(missing)}")
        path = self.path(directory)
        frame.to_parquet(path, index=False)
        return path


PAIR_COLUMNS = ("prompt", "response", "chosen", "rejected", "source_line")

# hh_raw: every source row's text fields, with its source line
HH_RAW = Table("raw.parquet", ("source_line", "chosen", "rejected"))
SPLIT_COLUMN = "source_split"  # hh_raw: the source split a row was read from
# preference_dataset: the rm-static schema, one table per split (the judge's split is seen by no other model)
PREFERENCE_SPLITS = {split: Table(f"{split}.parquet", PAIR_COLUMNS) for split in ("train", "test", "judge_train")}
# eval_prompts: the held-out prompts every policy is compared with SFT on
EVAL_PROMPTS = Table("eval_prompts.parquet", ("prompt_id", *PAIR_COLUMNS))
# rtp_records: RealToxicityPrompts flattened, with Perspective scores (the stand-in scorer trains on them)
RTP_RECORDS = Table("records.parquet", ("source_file", "source_line", "challenging", "prompt_text",
                                        "prompt_toxicity", "continuation_text", "continuation_toxicity"))
# rtp_prompts and every declared prompt set: the texts the models continue in a toxicity evaluation
PROMPTS = Table("prompts.parquet", ("prompt_id", "prompt_text"))
# sft_model/eval_responses: SFT's response to each eval prompt, sampled once and shared by every policy's suite
SFT_RESPONSES = Table("sft_responses.parquet", ("prompt_id", "prompt", "response"))
# Beside SFT's shared samples: the sampling settings they were drawn with (JSON), which every reader must match
SAMPLING_RECORD = "sampling.json"
# eval_responses: SFT's and the policy's response to each eval prompt, and the policy's KL to SFT on its own
RESPONSES = Table("responses.parquet", ("prompt_id", "prompt", "sft_response", "rlhf_response", "kl_to_sft"))
# toxicity_model: its agreement with Perspective on held-out RTP texts, and its scores of wordless probe texts
TOXICITY_HELDOUT = Table("heldout_scores.parquet", ("text", "perspective_toxicity", "detoxify_toxicity"))
PROBE_SCORES = Table("degenerate_probes.parquet", ("text", "detoxify_toxicity"))
# toxicity_scores (and each prompt set's): one row per continuation; sft_model/toxicity_scores (and each prompt
# set's) holds SFT's rows alone, scored once for every policy
# toxicity: Detoxify's score; second_toxicity: the second scorer's (modeling/second_scorer.py)
TOXICITY_SCORES = Table("scores.parquet", ("prompt_id", "model", "sample", "continuation", "toxicity",
                                           "second_toxicity"))
# auto_preference: the judge's and the optimised-against reward model's scores and outcomes per prompt
OUTCOMES = Table("outcomes.parquet", ("prompt_id", "sft_score", "rlhf_score", "sft_rm_score", "rlhf_rm_score",
                                      "outcome", "rm_outcome"))
# human_eval_results: every label, and the majority outcome per prompt
LABELS = Table("labels.parquet", ("task_id", "prompt_id", "annotator", "choice", "outcome"))
PER_PROMPT = Table("per_prompt.parquet", ("prompt_id", "outcome"))
# policy_comparison: every policy's figures, long form
# overoptimisation_curve: one row per policy snapshot, gains and KL with their CIs
CURVE = Table("curve.parquet", ("step", "kl", "kl_ci_low", "kl_ci_high", "proxy_gain", "proxy_gain_ci_low",
                                "proxy_gain_ci_high", "judge_gain", "judge_gain_ci_low", "judge_gain_ci_high"))
COMPARISON = Table("comparison.parquet", ("policy", "figure", "estimate", "ci_low", "ci_high"))
