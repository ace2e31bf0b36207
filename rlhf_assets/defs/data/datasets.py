"""Data assets: raw HH rows, the rm-static preference dataset with its split, and the held-out eval prompts.

These are light pandas work, so they run in the Dagster process; everything with torch runs in step programs.
"""


import tempfile
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset

from rlhf_assets.code_versions import code_version
from rlhf_assets.data.hh import (
    RM_STATIC_COLUMNS,
    DataError,
    MappingReport,
    RawRecord,
    text_field,
    to_preference_pairs,
)
from rlhf_assets.data.sources import describe_source, iter_source_records
from rlhf_assets.data.split import (
    SPLIT_RULE,
    choose_eval_prompts,
    is_judge_prompt,
    split_heldout,
    split_pairs,
    split_relations,
)
from rlhf_assets.defs.common import preview_table, publish
from rlhf_assets.defs.data.snapshots import snapshot_key, staged_source
from rlhf_assets.layouts import EVAL_PROMPTS, HH_RAW, PREFERENCE_SPLITS, SPLIT_COLUMN
from rlhf_assets.overrides import merged, override
from rlhf_assets.presets import DataSpec, check_heldout_unseen
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.storage import Manifest


class HHRawConfig(Config):
    """Where `hh_raw` reads from; by default the preset's source."""

    source: str | None = override(DataSpec, "source")
    hub_split: str | None = override(DataSpec, "hub_split")
    heldout_split: str | None = override(DataSpec, "heldout_split")


class PreferenceConfig(Config):
    """How `preference_dataset` splits prompts into train, test and the independent judge's share."""

    test_fraction: float | None = override(DataSpec, "test_fraction")
    judge_fraction: float | None = override(DataSpec, "judge_fraction")


class EvalPromptsConfig(Config):
    """How many held-out prompts `eval_prompts` picks, and with which seed."""

    eval_prompt_count: int | None = override(DataSpec, "eval_prompt_count")
    seed: int | None = override(DataSpec, "seed")


@asset(code_version=code_version("rlhf_assets.defs.data.datasets"), group_name="data", kinds={"pandas", "parquet"},
       ins={"data_snapshot": AssetIn(key=snapshot_key("preference_data"))})
def hh_raw(context: AssetExecutionContext, config: HHRawConfig, preset: PresetResource,
           artifacts: ArtifactStoreResource, data_snapshot: Manifest) -> Output[Manifest]:
    """Anthropic HH preference rows as read from the source, each with its source line number.

    Every row is checked here (valid JSON, `chosen` and `rejected` strings), so a broken file fails at the
    first asset with the file, line and field named, before any training starts.
    """
    chosen = preset.get()
    spec = merged(chosen.data, config)
    check_heldout_unseen(spec, chosen.reward)
    source = spec.source
    read_from = staged_source(source, data_snapshot, artifacts.store())
    splits = [spec.hub_split] + ([spec.heldout_split] if spec.heldout_split else [])
    context.log.info(f"reading {source} ({describe_source(source)}) from {read_from}, split {' and '.join(splits)}")
    rows, first_seen = [], {}
    for split in splits:
        for record in iter_source_records(read_from, split):
            for name, value in record.fields.items():  # a column must keep one kind, or the Parquet write fails
                kind = type(value).__name__ if value is not None else None
                seen = first_seen.setdefault(name, (kind, record.line)) if kind else None
                if seen and seen[0] != kind:
                    raise DataError(source, record.line, name, f"is {kind} here but {seen[0]} on line {seen[1]}")
            rows.append({"source_line": record.line, **stored_text_fields(record, source), SPLIT_COLUMN: split})
    frame = pd.DataFrame(rows)
    with tempfile.TemporaryDirectory() as tmp:
        HH_RAW.write(frame, Path(tmp))
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name.value,
            config={"source": source, "split": spec.hub_split, "heldout_split": spec.heldout_split},
            counts={"rows": len(frame)},
            metadata={"source": MetadataValue.text(source), "source_kind": MetadataValue.text(describe_source(source)),
                      "columns": MetadataValue.text(", ".join(frame.columns))},
        )


def stored_text_fields(record: RawRecord, source: str) -> dict[str, str]:
    """The text fields `hh_raw` keeps of one row, checked so that writing the table cannot fail far from here.

    `chosen` and `rejected` must be strings; other fields are kept when they are text; every kept string must
    be encodable (a lone surrogate such as \\ud800 is valid JSON but not Unicode text); `source_line` is ours.
    """
    for required in ("chosen", "rejected"):
        text_field(record, required, source)
    for reserved in ("source_line", SPLIT_COLUMN):
        if reserved in record.fields:
            raise DataError(source, record.line, reserved, f"is a reserved name (hh_raw stores each row's source "
                            f"{reserved.removeprefix('source_')} under it)")
    texts = {}
    for name in sorted(record.fields):
        value = record.fields[name]
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise DataError(source, record.line, name, "not valid Unicode text (a lone surrogate such as "
                                "\\ud800)") from None
            texts[name] = value
    return texts


def _read_raw(manifest: Manifest, artifacts: ArtifactStoreResource) -> dict[str, list[RawRecord]]:
    """The raw rows by the source split they were read from."""
    frame = HH_RAW.read(artifacts.store().verified_path(manifest))
    fields = [c for c in frame.columns if c not in ("source_line", SPLIT_COLUMN)]
    splits = frame[SPLIT_COLUMN] if SPLIT_COLUMN in frame else pd.Series([manifest.config["split"]] * len(frame))
    records: dict[str, list[RawRecord]] = {}
    for split, (_, row) in zip(splits, frame.iterrows(), strict=True):
        records.setdefault(split, []).append(
            RawRecord(int(row["source_line"]), {f: row[f] for f in fields if isinstance(row[f], str)}))
    return records


def _length_stats(frame: pd.DataFrame) -> MetadataValue:
    lines = ["| column | mean | p50 | p95 | max |", "|---|---|---|---|---|"]
    for column in ("prompt", "chosen", "rejected"):
        words = frame[column].str.split().str.len()
        lines.append(f"| {column} | {words.mean():.1f} | {words.median():.0f} | {words.quantile(0.95):.0f} | "
                     f"{words.max()} |")
    return MetadataValue.md("Length in whitespace-separated words (the tokenizer is fit downstream).\n\n"
                            + "\n".join(lines))


def _drop_table(report: MappingReport) -> MetadataValue:
    lines = ["| reason | rows | first source lines |", "|---|---|---|"]
    for reason, count in sorted(report.dropped.items()):
        lines.append(f"| {reason} | {count} | {', '.join(map(str, report.examples[reason]))} |")
    if not report.dropped:
        lines.append("| (none) | 0 | |")
    return MetadataValue.md("\n".join(lines))


# The independent judge's training pairs (`judge_model`), disjoint from train and test by prompt.
JUDGE_SPLIT = "judge_train"


@asset(code_version=code_version("rlhf_assets.defs.data.datasets"), group_name="data", kinds={"pandas", "parquet"})
def preference_dataset(
    context: AssetExecutionContext, config: PreferenceConfig, preset: PresetResource, artifacts: ArtifactStoreResource,
    hh_raw: Manifest,
) -> Output[Manifest]:
    """Rows in the `Dahoas/rm-static` schema (prompt, response, chosen, rejected), split train/test/judge by
    conversation.

    Irregular rows (dialogues that differ before the last turn, empty final turns, duplicates) are dropped
    and counted by reason; the split is keyed by the conversation's opening, so no test prompt shares an
    opening with, or is a prefix of, a training or judge dialogue (`data/split.py`), and the asset reports the
    count of such relations (0).
    """
    spec = merged(preset.get().data, config)
    test_fraction, judge_fraction = spec.test_fraction, spec.judge_fraction
    source, heldout_split = hh_raw.config["source"], hh_raw.config.get("heldout_split")
    records = _read_raw(hh_raw, artifacts)
    pairs, report = to_preference_pairs(records.get(hh_raw.config["split"], []), source=source)
    if heldout_split:
        heldout, heldout_report = to_preference_pairs(records.get(heldout_split, []),
                                                      source=f"{source}:{heldout_split}")
        report = report.merged(heldout_report)
        train, test, judge = split_heldout(pairs, heldout, test_fraction)
    else:
        train, test = split_pairs(pairs, test_fraction)
        judge = [pair for pair in train if is_judge_prompt(pair.prompt, test_fraction, judge_fraction)]
        train = [pair for pair in train if not is_judge_prompt(pair.prompt, test_fraction, judge_fraction)]
    if not train and not test:
        raise DataError(source, None, None, "no usable preference pairs after dropping irregular rows")
    sides = (("train", train), ("test", test), (JUDGE_SPLIT, judge))
    frames = {name: pd.DataFrame([p.as_row() for p in side]) for name, side in sides}
    if any(frame.empty for frame in frames.values()):
        raise ValueError(f"test_fraction {test_fraction} and judge_fraction {judge_fraction} leave an empty split "
                         f"({len(train)} train, {len(test)} test, {len(judge)} judge)")
    test_prompts = [pair.prompt for pair in test]
    relations = {side: split_relations(test_prompts, [pair.prompt for pair in pairs_])
                 for side, pairs_ in (("train", train), (JUDGE_SPLIT, judge))}
    if any(found.total for found in relations.values()):
        raise ValueError(f"the conversation split leaks: {relations}")  # the split's invariant, never data
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in frames.items():
            PREFERENCE_SPLITS[name].write(frame, Path(tmp))
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name.value,
            config={"test_fraction": test_fraction, "judge_fraction": judge_fraction,
                    "heldout_split": heldout_split, "columns": list(RM_STATIC_COLUMNS), "split_rule": SPLIT_RULE},
            counts={"train_rows": len(train), "test_rows": len(test), "judge_rows": len(judge),
                    "kept_rows": report.kept, "dropped_rows": sum(report.dropped.values()),
                    **{f"test_prompts_related_to_{side}": found.total for side, found in relations.items()}},
            metadata={"split_rule": MetadataValue.text(SPLIT_RULE),
                "dropped_by_reason": _drop_table(report),
                "length_stats": _length_stats(pd.concat(frames.values())),
                "preview": preview_table(frames["train"], ["prompt", "chosen", "rejected"]),
            },
        )


@asset(code_version=code_version("rlhf_assets.defs.data.datasets"), group_name="data", kinds={"pandas", "parquet"})
def eval_prompts(
    context: AssetExecutionContext,
    config: EvalPromptsConfig,
    preset: PresetResource,
    artifacts: ArtifactStoreResource,
    preference_dataset: Manifest,
) -> Output[Manifest]:
    """The held-out prompts SFT and RLHF models are compared on (100 in the recipe), never seen in training."""
    spec = merged(preset.get().data, config)
    count, seed = spec.eval_prompt_count, spec.seed
    directory = artifacts.store().verified_path(preference_dataset)
    test_file = PREFERENCE_SPLITS["test"].path(directory)
    test = PREFERENCE_SPLITS["test"].read(directory)
    pairs, _ = to_preference_pairs(
        (RawRecord(int(r.source_line), {"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected})
         for r in test.itertuples()),
        source=str(test_file),
    )
    chosen = choose_eval_prompts(pairs, count, seed)
    frame = pd.DataFrame([{"prompt_id": i, **p.as_row()} for i, p in enumerate(chosen)])
    with tempfile.TemporaryDirectory() as tmp:
        EVAL_PROMPTS.write(frame, Path(tmp))
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name.value,
            config={"eval_prompt_count": count, "seed": seed},
            counts={"prompts": len(frame)},
            metadata={"preview": preview_table(frame, ["prompt_id", "prompt", "chosen"])},
        )
