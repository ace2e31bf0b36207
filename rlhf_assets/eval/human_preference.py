"""Human preference of RLHF over SFT from un-blinded labels: per-prompt outcomes and the statistics on them.

With several annotators per prompt, the prompt's outcome is their strict majority (a split is a tie), so the
counts stay comparable with the recipe's one-judgement-per-prompt 30 / 54 / 16; label-level counts and
Fleiss' kappa are reported beside them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rlhf_assets.eval.agreement import fleiss_kappa, majority_outcome, sign_test
from rlhf_assets.eval.preference import PreferenceSummary, summarize_outcomes


@dataclass(frozen=True)
class JudgedLabel:
    """One annotator's un-blinded judgement of one prompt: 'win' / 'tie' / 'loss' for RLHF."""

    prompt_id: int
    annotator: str
    outcome: str


@dataclass(frozen=True)
class HumanPreference:
    """Per-prompt outcomes and what the issue asks to report about them."""

    per_prompt: dict[int, str]
    prompts: PreferenceSummary
    labels: PreferenceSummary
    sign_test_p: float
    kappa: float | None
    annotators: int
    max_overlap: int


def summarize_human_preference(labels: Sequence[JudgedLabel]) -> HumanPreference:
    """Counts, Wilson-ready summaries, the sign test on prompt outcomes and Fleiss' kappa across annotators."""
    if not labels:
        raise ValueError("no labels to summarize")
    by_prompt: dict[int, list[str]] = defaultdict(list)
    for label in labels:
        by_prompt[label.prompt_id].append(label.outcome)
    per_prompt = {prompt: majority_outcome(outcomes) for prompt, outcomes in sorted(by_prompt.items())}
    prompts = summarize_outcomes(list(per_prompt.values()))
    return HumanPreference(
        per_prompt=per_prompt,
        prompts=prompts,
        labels=summarize_outcomes([label.outcome for label in labels]),
        sign_test_p=sign_test(prompts.wins, prompts.losses),
        kappa=fleiss_kappa(list(by_prompt.values())),
        annotators=len({label.annotator for label in labels}),
        max_overlap=max(len(outcomes) for outcomes in by_prompt.values()),
    )
