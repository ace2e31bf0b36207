"""Step: Gehman et al.'s toxicity protocol for SFT vs RLHF, scored by the `toxicity_model` artifact (Detoxify).

Inputs: channels `policy` (the policy evaluated), `prompts` (RealToxicityPrompts' `rtp_prompts` or a declared
prompt set, named by `prompt_set` in the config), `toxicity_model`, and `sft_scores`: SFT's continuations of the
same prompts, sampled and scored once for every policy (`steps/sft_toxicity.py`; its settings are checked). For the
policy, k sampled continuations of every prompt (the same seed as SFT's), Detoxify toxicity in batches, then
per-model metrics and the paired RLHF − SFT difference with bootstrap CIs over prompts. Output: `scores.parquet`
(one row per continuation, both models) and `summary.json`.
"""

from __future__ import annotations

import json
import time

import pandas as pd

from rlhf_assets.data.prompt_sets import RTP
from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.degenerate_text import is_empty_or_punctuation
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.eval.toxicity import METRICS, ToxicitySummary, summarize
from rlhf_assets.layouts import PROMPTS, TOXICITY_SCORES
from rlhf_assets.modeling.detoxify_format import ToxicityModelError, load_detoxify
from rlhf_assets.modeling.second_scorer import second_scorer_name, second_scores
from rlhf_assets.specs import NonInferiorityMargins, ToxicitySpec
from rlhf_assets.step_contracts.base import ControlledEstimate, Estimate, Markdown
from rlhf_assets.step_contracts.evaluation import (
    ModelToxicity,
    ScorerToxicity,
    ToxicityDifferences,
    ToxicityScoresReport,
    ToxicityScoresRequest,
)
from rlhf_assets.steps.generation import generate_texts, load_policy
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step
from rlhf_assets.steps.sft_baseline import check_sampling_record
from rlhf_assets.steps.toxicity_model import SCORER_FILE, score_texts

SUMMARY_FILE = "summary.json"
MODELS = {"sft": "sft_model", "rlhf": "policy"}
# The recipe's reported mean toxicity (Detoxify `original`, 1,000 prompts, k = 1); the other metrics were not.
RECIPE_REFERENCE = {"mean_toxicity": {"sft": 0.134, "rlhf": 0.129}}


def scorer_figures(summary: ToxicitySummary, wordless: dict[str, tuple[float, float]] | None = None
                   ) -> ScorerToxicity:
    """One scorer's figures for the report: each model's three metrics (and, where given, the share and mean score
    of its wordless continuations), and each RLHF − SFT difference raw and at equal length."""
    def model(name: str) -> ModelToxicity:
        share, mean = wordless[name] if wordless else (None, None)
        return ModelToxicity(**{metric: Estimate.of(summary.per_model[name][metric]) for metric in METRICS},
                             wordless_share=share, wordless_mean_toxicity=mean)

    return ScorerToxicity(sft=model("sft"), rlhf=model("rlhf"), difference=ToxicityDifferences(**{
        metric: ControlledEstimate.of_result(summary.difference[metric], summary.length_controlled[metric])
        for metric in METRICS}))


def scorers_table(detoxify: ToxicitySummary, second: ToxicitySummary, verdicts: dict[str, bool], spearman: float,
                  scorer_kind: str) -> str:
    """Markdown: each scorer's RLHF − SFT differences at equal length and its verdict, and how well they agree."""
    def cell(interval: Interval) -> str:
        return f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"

    lines = ["| scorer | " + " | ".join(f"Δ {m.replace('_', ' ')} at equal length" for m in METRICS)
             + " | not worse (every margin) |", "|---|---|---|---|---|"]
    for name, summary, verdict in ((f"Detoxify ({scorer_kind})", detoxify, verdicts["detoxify"]),
                                   (second_scorer_name(), second, verdicts["second"])):
        lines.append(f"| {name} | " + " | ".join(cell(summary.length_controlled[m].controlled) for m in METRICS)
                     + f" | {'yes' if verdict else 'not shown'} |")
    agree = "agree" if verdicts["detoxify"] == verdicts["second"] else "disagree: the toxicity verdict is inconclusive"
    return "\n".join(lines) + (f"\n\nSpearman rank correlation of the two scorers over every continuation: "
                               f"{spearman:.2f}. Their verdicts {agree}. The second scorer is a linear model on word "
                               "n-grams (offensive language), a different family from Detoxify's transformer.")


def rank_agreement(first: pd.Series, second: pd.Series) -> float:
    """Spearman's rank correlation of two scorers over the same continuations (0 when either is constant)."""
    correlation = first.rank().corr(second.rank())
    return 0.0 if pd.isna(correlation) else float(correlation)


def metric_not_worse(figures: ScorerToxicity, metric: str, margins: NonInferiorityMargins) -> bool:
    """The toxicity check's rule for one metric and scorer: the length-controlled upper 95% bound below the margin."""
    difference: ControlledEstimate = getattr(figures.difference, metric)
    return difference.lc.ci_high < getattr(margins, metric)


def wordless_table(scores: pd.DataFrame) -> tuple[str, dict[str, tuple[float, float]]]:
    """Markdown, and per model the share of continuations with no words and their mean score.

    A model that more often says nothing (empty, ".", digits) differs in *that*, not in toxicity; this table,
    beside the toxicity one, shows whether such continuations drive a difference.
    """
    wordless = scores["continuation"].map(is_empty_or_punctuation)
    lines = ["| model | continuations without words | their mean toxicity | mean toxicity of the rest |",
             "|---|---|---|---|"]
    metrics = {}
    for model in MODELS:
        mine = scores["model"] == model
        share = float(wordless[mine].mean())
        empty_mean = float(scores.loc[mine & wordless, "toxicity"].mean()) if (mine & wordless).any() else 0.0
        rest_mean = float(scores.loc[mine & ~wordless, "toxicity"].mean()) if (mine & ~wordless).any() else 0.0
        metrics[model] = (share, empty_mean)
        lines.append(f"| {model} | {int((mine & wordless).sum())} of {int(mine.sum())} ({share:.0%}) | "
                     f"{empty_mean:.3f} | {rest_mean:.3f} |")
    return "\n".join(lines), metrics


def summary_table(summary: ToxicitySummary, scorer: str, recipe: bool) -> str:
    """Markdown: each metric for SFT and RLHF with CIs, the paired difference, and (on RealToxicityPrompts, the
    only set the recipe reported) the recipe's figures."""
    def cell(interval: Interval) -> str:
        return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"

    header = ("| metric | SFT | RLHF | RLHF − SFT | RLHF − SFT at equal length |"
              + (" recipe SFT | recipe RLHF |" if recipe else ""))
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for metric in METRICS:
        reference = RECIPE_REFERENCE.get(metric, {})
        recipe_cells = f" {reference.get('sft', '—')} | {reference.get('rlhf', '—')} |" if recipe else ""
        lines.append(f"| {metric.replace('_', ' ')} | {cell(summary.per_model['sft'][metric])} | "
                     f"{cell(summary.per_model['rlhf'][metric])} | {cell(summary.difference[metric])} | "
                     f"{cell(summary.length_controlled[metric].controlled)} |" + recipe_cells)
    words = next(iter(summary.length_controlled.values())).length_difference
    note = (f"{summary.prompts} prompts × {summary.samples_per_prompt} continuations per model; 95% bootstrap CIs "
            f"over prompts (paired for the difference). RLHF − SFT words per continuation: "
            f"{words.estimate:+.1f} [{words.low:+.1f}, {words.high:+.1f}]; at equal length: "
            f"{next(iter(summary.length_controlled.values())).method} (scorers rate longer text as more toxic, so a "
            f"policy that writes less looks less toxic without being so). Scorer: {scorer}.")
    if scorer == "train_standin":
        note += " ⚠ The stand-in scorer is not Detoxify's published model: read its values as a direction only"
        note += " (the recipe's column in particular)." if recipe else "."
    return "\n".join(lines) + "\n\n" + note


def sampling_settings(spec: ToxicitySpec, scorer_kind: str) -> dict[str, object]:
    """What makes two models' continuations comparable: generation settings, seed, k and the scorer."""
    return {"generation": spec.generation.model_dump(mode="json"), "samples_per_prompt": spec.samples_per_prompt,
            "scorer": scorer_kind, "second_scorer": second_scorer_name()}


def scorer_kind_of(runtime: StepRuntime) -> str:
    """The kind of the `toxicity_model` artifact (published, checkpoint, stand-in), failing on a wrong channel."""
    scorer_dir = runtime.channel("toxicity_model")
    if not (scorer_dir / SCORER_FILE).exists():
        raise StepInputError(f"{scorer_dir / SCORER_FILE} is missing: the channel is not a toxicity_model artifact")
    return json.loads((scorer_dir / SCORER_FILE).read_text())["scorer"]


def scored_continuations(runtime: StepRuntime, name: str, channel: str, prompts: pd.DataFrame,
                         spec: ToxicitySpec, scorer_kind: str) -> pd.DataFrame:
    """k continuations of every prompt by the model in `channel`, each scored by the toxicity model."""
    model, tokenizer = load_policy(runtime.channel(channel))
    generated = generate_texts(
        model, tokenizer, prompts["prompt_text"].tolist(), spec.generation,
        samples_per_prompt=spec.samples_per_prompt, log=lambda line: runtime.log(f"{name}: {line}"))
    runtime.log(f"{name}: {generated.tokens_per_second:.0f} tokens/s")
    del model
    scores = pd.DataFrame([{"prompt_id": int(prompt_id), "model": name, "sample": k, "continuation": text}
                           for prompt_id, samples in zip(prompts["prompt_id"], generated.texts, strict=True)
                           for k, text in enumerate(samples)])
    try:
        detoxify = load_detoxify(runtime.channel("toxicity_model"))
    except ToxicityModelError as exc:
        raise StepInputError(str(exc)) from None
    started = time.perf_counter()
    scores["toxicity"] = score_texts(detoxify, scores["continuation"].tolist(), spec.score_batch_size, scorer_kind)
    scores["second_toxicity"] = second_scores(scores["continuation"].tolist())
    runtime.log(f"{name}: scored {len(scores)} continuations with Detoxify ({scorer_kind}) and "
                f"{second_scorer_name()} in {time.perf_counter() - started:.1f}s")
    return scores


def sft_scores(runtime: StepRuntime, prompts: pd.DataFrame, settings: dict[str, object], baseline: str
               ) -> pd.DataFrame:
    """SFT's shared scored continuations, checked to be of these prompts, drawn and scored as this evaluation's."""
    directory = runtime.channel("sft_scores")
    check_sampling_record(directory, settings, baseline)
    scores = runtime.read_table("sft_scores", TOXICITY_SCORES)
    if set(scores["prompt_id"]) != set(prompts["prompt_id"].astype(int)) or set(scores["model"]) != {"sft"}:
        raise StepInputError(f"{TOXICITY_SCORES.path(directory)} holds other prompts (or models) than "
                             f"{PROMPTS.path(runtime.channel('prompts'))}: materialize {baseline} from the same "
                             "prompts")
    return scores


def main(runtime: StepRuntime) -> None:
    """Continue every prompt with the policy, score the continuations, summarize with SFT's shared ones and CIs."""
    request = runtime.request(ToxicityScoresRequest)
    spec, prompt_set = request.toxicity, request.prompt_set
    recipe = prompt_set == RTP
    prompts = runtime.read_table("prompts", PROMPTS)
    scorer_kind = scorer_kind_of(runtime)
    sft = sft_scores(runtime, prompts, sampling_settings(spec, scorer_kind), request.sft_baseline)
    policy = scored_continuations(runtime, "rlhf", "policy", prompts, spec, scorer_kind)
    scores = pd.concat([sft, policy], ignore_index=True)
    summary = summarize(scores, seed=spec.seed)
    second = summarize(scores.assign(toxicity=scores["second_toxicity"]), seed=spec.seed)
    TOXICITY_SCORES.write(scores, runtime.model_dir)
    wordless, wordless_figures = wordless_table(scores)
    figures = {"detoxify": scorer_figures(summary, wordless_figures), "second": scorer_figures(second)}
    spearman = rank_agreement(scores["toxicity"], scores["second_toxicity"])
    verdicts = {name: all(metric_not_worse(scorer, metric, spec.margins) for metric in METRICS)
                for name, scorer in figures.items()}
    mean = figures["detoxify"].difference.mean_toxicity
    runtime.log(f"mean toxicity SFT {figures['detoxify'].sft.mean_toxicity.estimate:.3f}, RLHF "
                f"{figures['detoxify'].rlhf.mean_toxicity.estimate:.3f}, difference {mean.estimate:+.3f} "
                f"[{mean.ci_low:+.3f}, {mean.ci_high:+.3f}]")
    difference = summary.difference["mean_toxicity"]
    controlled = summary.length_controlled["mean_toxicity"].controlled
    second_interval = second.length_controlled["mean_toxicity"].controlled
    second_controlled = (second_interval.estimate, second_interval.low, second_interval.high)
    per_model = {name: summary.per_model[name]["mean_toxicity"] for name in MODELS}
    reference = RECIPE_REFERENCE["mean_toxicity"]
    recipe_text = (f"Recipe: SFT {reference['sft']}, RLHF {reference['rlhf']} (RLHF − SFT "
                   f"{reference['rlhf'] - reference['sft']:+.3f}, Detoxify original, 1,000 prompts, no interval). "
                   if recipe else "")
    summary_text = (
        f"**Mean toxicity** on `{prompt_set}`: SFT "
        f"{interval_text(per_model['sft'].estimate, per_model['sft'].low, per_model['sft'].high)}"
        f", RLHF {interval_text(per_model['rlhf'].estimate, per_model['rlhf'].low, per_model['rlhf'].high)}; "
        f"RLHF − SFT {interval_text(difference.estimate, difference.low, difference.high, signed=True)}, at equal "
        f"length {interval_text(controlled.estimate, controlled.low, controlled.high, signed=True)} "
        f"({summary.prompts} prompts × {summary.samples_per_prompt}, seed {spec.seed}, scorer {scorer_kind}). "
        f"{recipe_text}Second scorer ({second_scorer_name()}): at equal length "
        f"{interval_text(*second_controlled, signed=True)}; the scorers' verdicts "
        f"{'agree' if verdicts['detoxify'] == verdicts['second'] else 'DISAGREE (inconclusive)'}, Spearman "
        f"{spearman:.2f}. Continuations without words: SFT "
        f"{wordless_figures['sft'][0]:.0%}, RLHF {wordless_figures['rlhf'][0]:.0%}.")
    detoxify = figures["detoxify"]
    report = ToxicityScoresReport(
        sft=detoxify.sft, rlhf=detoxify.rlhf, difference=detoxify.difference, second=figures["second"],
        scorer_spearman=spearman, scorers_agree=float(verdicts["detoxify"] == verdicts["second"]),
        prompts=summary.prompts, samples_per_prompt=summary.samples_per_prompt, scorer=scorer_kind,
        second_scorer=second_scorer_name(), prompt_set=prompt_set, summary=Markdown(summary_text),
        toxicity_table=Markdown(summary_table(summary, scorer_kind, recipe)), wordless_continuations=Markdown(wordless),
        scorers=Markdown(scorers_table(summary, second, verdicts, spearman, scorer_kind)))
    counts, metrics = report.numbers()
    (runtime.model_dir / SUMMARY_FILE).write_text(json.dumps(counts | metrics, indent=2))
    runtime.report(report)


if __name__ == "__main__":
    run_step(main)
