"""The contracts of the evaluation steps: SFT's shared samples, a policy's eval responses, the judge's verdict,
the over-optimisation curve, the toxicity model and toxicity scores."""

from __future__ import annotations

from rlhf_assets.specs import EvalSpec, RewardSpec, ToxicitySpec
from rlhf_assets.step_contracts.base import (
    ControlledEstimate,
    Estimate,
    Figures,
    LengthControlledFigures,
    Markdown,
    StepReport,
    StepRequest,
)


class ResponseFigures(Figures):
    """How one model's responses look: length and the shares that make a comparison meaningless."""

    mean_words: Estimate
    empty_share: float
    short_share: float
    duplicate_share: float


class SFTResponsesReport(StepReport):
    prompts: int
    mean_words: float
    empty_share: float
    short_share: float
    duplicate_share: float
    tokens_per_second: float
    sampling_seed: int


class SFTResponsesRequest(StepRequest):
    STEP = "sft_responses"
    REPORT = SFTResponsesReport
    evaluation: EvalSpec


class EvalResponsesReport(StepReport):
    prompts: int
    rlhf_tokens_per_second: float
    sft: ResponseFigures
    rlhf: ResponseFigures
    kl_to_sft: Estimate
    kl_bound: float
    summary: Markdown


class EvalResponsesRequest(StepRequest):
    """`kl_bound` is the preset's bound on any policy's KL to SFT (`PPOSpec.kl_bound`)."""

    STEP = "eval_responses"
    REPORT = EvalResponsesReport
    evaluation: EvalSpec
    kl_bound: float


class AutoPreferenceReport(StepReport):
    """The judge's win / tie / loss (rates with Wilson intervals), its gains at equal length beside the raw ones,
    and the optimised-against reward model's counts for contrast."""

    wins: int
    ties: int
    losses: int
    judge: str
    tie_margin_sd: float
    tie_margin_score: float
    sign_test_p: float
    mean_score_difference: float
    rm_wins: int
    rm_ties: int
    rm_losses: int
    win_rate: Estimate
    win_or_tie_rate: Estimate
    loss_rate: Estimate
    judge_win_rate: LengthControlledFigures
    win_rate_raw: Estimate
    judge_gain: LengthControlledFigures
    judge_gain_raw: Estimate
    rm_gain: LengthControlledFigures
    rm_gain_raw: Estimate
    summary: Markdown
    outcomes: Markdown
    length_control: Markdown

    @property
    def judged(self) -> int:
        """Prompts the judge decided on: the n of every rate above."""
        return self.wins + self.ties + self.losses


class AutoPreferenceRequest(StepRequest):
    STEP = "auto_preference"
    REPORT = AutoPreferenceReport
    evaluation: EvalSpec
    reward: RewardSpec
    judge: RewardSpec


class OverOptimisationReport(StepReport):
    points: int
    snapshots: int
    judge_peak_step: int
    judge_peak_kl: float
    over_optimised: float
    judge: str
    summary: Markdown
    curve_table: Markdown
    plot: Markdown


class OverOptimisationRequest(StepRequest):
    """`final_step` is the policy's last training step (its report's `steps`): the curve's last point."""

    STEP = "overoptimisation"
    REPORT = OverOptimisationReport
    evaluation: EvalSpec
    reward: RewardSpec
    judge: RewardSpec
    final_step: int


class ToxicityModelReport(StepReport):
    scorer: str
    classes: str
    heldout_roc_auc: float
    heldout_pearson: float
    heldout_spearman: float
    heldout_texts: int
    heldout_records: int
    train_records: int
    excluded_eval_prompts: int
    degenerate_probe_max: float
    degenerate_probe_mean: float
    degenerate_probes_by_rule: int
    degenerate_probes: Markdown
    summary: Markdown
    note: Markdown


class ToxicityModelRequest(StepRequest):
    STEP = "toxicity_model"
    REPORT = ToxicityModelReport
    toxicity: ToxicitySpec


class ModelToxicity(Figures):
    """One model's three Gehman metrics (and, by Detoxify, how its wordless continuations scored)."""

    mean_toxicity: Estimate
    expected_max_toxicity: Estimate
    toxicity_probability: Estimate
    wordless_share: float | None = None
    wordless_mean_toxicity: float | None = None


class ToxicityDifferences(Figures):
    """RLHF − SFT on each metric, and the same at equal continuation length."""

    mean_toxicity: ControlledEstimate
    expected_max_toxicity: ControlledEstimate
    toxicity_probability: ControlledEstimate


class ScorerToxicity(Figures):
    """What the second scorer says, spelled `second_<...>` beside Detoxify's figures."""

    sft: ModelToxicity
    rlhf: ModelToxicity
    difference: ToxicityDifferences


class ToxicityScoresReport(StepReport):
    """Detoxify's figures (SFT, RLHF, the difference), the second scorer's, and whether the two agree."""

    sft: ModelToxicity
    rlhf: ModelToxicity
    difference: ToxicityDifferences
    second: ScorerToxicity
    scorer_spearman: float
    scorers_agree: float
    prompts: int
    samples_per_prompt: int
    scorer: str
    second_scorer: str
    prompt_set: str
    summary: Markdown
    toxicity_table: Markdown
    wordless_continuations: Markdown
    scorers: Markdown

    @property
    def detoxify(self) -> ScorerToxicity:
        """Detoxify's figures as one group, like the second scorer's."""
        return ScorerToxicity(sft=self.sft, rlhf=self.rlhf, difference=self.difference)


class ToxicityScoresRequest(StepRequest):
    """`sft_baseline` names the SFT asset whose scored continuations the step reuses (for its error messages)."""

    STEP = "toxicity_scores"
    REPORT = ToxicityScoresReport
    toxicity: ToxicitySpec
    prompt_set: str
    sft_baseline: str


class SFTToxicityReport(StepReport):
    prompts: int
    continuations: int
    scorer: str
    prompt_set: str
    sft_mean_toxicity: float
    sampling_seed: int


class SFTToxicityRequest(StepRequest):
    STEP = "sft_toxicity"
    REPORT = SFTToxicityReport
    toxicity: ToxicitySpec
    prompt_set: str
