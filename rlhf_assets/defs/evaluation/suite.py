"""One evaluation suite for any policy: eval responses, toxicity scores and the independent judge's verdict.

Every policy asset (`ppo_policy`, `dpo_policy`, ...) gets the same assets, built here by one factory and run by the
same step programs with the policy as their `policy` channel: eval responses, the judge's verdict, toxicity on
RealToxicityPrompts, and toxicity on every declared prompt set (`<name>_toxicity_scores`, see
`prompt_sets.py`). They are told apart by **asset-key prefixes**: every policy's suite lives under its own
name, alike for all of them (`ppo_policy/eval_responses`, `dpo_policy/eval_responses`, ...).
Why prefixes and not partitions: each policy is its own asset with its own lineage (DPO never reads the reward
model; PPO does), and a partitioned evaluation would have to depend on all policies at once, so a new PPO
checkpoint would look like an upstream change of DPO's evaluation too. With prefixes, each suite's lineage
names exactly the policy it judged, the UI shows it as its own group, and declarative automation
(`KEEP_CURRENT`) re-evaluates only what changed.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    MetadataValue,
    Output,
    asset,
)

from rlhf_assets.code_versions import step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.data.prompt_sets import RTP
from rlhf_assets.defs.common import EVALUATION_GROUP, preview_table
from rlhf_assets.defs.step_runs import GPU_POOL, StepConfig, run_step_and_publish
from rlhf_assets.layouts import RESPONSES
from rlhf_assets.overrides import merged, override
from rlhf_assets.presets import EvalSpec, ToxicitySpec
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.step_contracts.evaluation import (
    AutoPreferenceRequest,
    EvalResponsesRequest,
    OverOptimisationRequest,
    SFTResponsesRequest,
    SFTToxicityRequest,
    ToxicityScoresRequest,
)
from rlhf_assets.step_contracts.models import PolicyReport
from rlhf_assets.storage import Manifest

SUITE = ("eval_responses", "toxicity_scores", "auto_preference")  # every policy has these; the comparison needs them
SFT_PREFIX = ("sft_model",)  # SFT's side of every comparison, sampled once: `sft_model/eval_responses`, ...

# Declarative automation of every policy's suite and of SFT's shared samples: evaluate again once any input is
# newer than the evaluation (a new policy, SFT, judge, eval prompts, scorer...), when nothing it reads is missing
# or still being written, and only when every blocking check on its direct inputs passed on their latest
# materialization (a policy whose gain over SFT is not shown is not evaluated; a check that never ran blocks too).
KEEP_CURRENT = AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()


@dataclass(frozen=True)
class EvaluatedPolicy:
    """A policy asset and where its evaluation suite lives."""

    asset: str
    step: str  # the step program that trains it (its code version is part of the comparison)
    optimises_reward_model: bool  # trained to maximise `reward_model` (PPO, RLOO, GRPO), so its RM gain is its target

    def key(self, name: str) -> AssetKey:
        """The key of this policy's `name` asset (`eval_responses`, `toxicity_scores`, `auto_preference`)."""
        return AssetKey([self.asset, name])

    @property
    def prefix(self) -> list[str]:
        """The key prefix of every asset of this policy's suite: the policy's own name."""
        return [self.asset]

    @property
    def group(self) -> str:
        """The UI group of the policy's evaluation suite."""
        return f"{self.asset}_evaluation"

    @property
    def label(self) -> str:
        return self.asset.removesuffix("_policy").upper()


POLICIES = (
    EvaluatedPolicy("ppo_policy", "ppo", optimises_reward_model=True),
    EvaluatedPolicy("dpo_policy", "dpo", optimises_reward_model=False),
)


class SamplingConfig(StepConfig):
    """The seed both models sample with (e.g. to see how much a figure moves when only the draws change)."""

    generation_seed: int | None = override(EvalSpec, "generation.seed")


class ToxicityScoresConfig(StepConfig):
    """How many continuations `toxicity_scores` samples per prompt and model, and with which seed."""

    generation_seed: int | None = override(ToxicitySpec, "generation.seed")
    samples_per_prompt: int | None = override(ToxicitySpec, "samples_per_prompt")


class AutoPreferenceConfig(StepConfig):
    """The automatic judge's settings."""

    tie_margin: float | None = override(EvalSpec, "tie_margin")
    judge: str | None = override(EvalSpec, "judge")


def _responses_preview(directory: Path) -> dict[str, MetadataValue]:
    frame = RESPONSES.read(directory)
    return {"preview": preview_table(frame, ["prompt_id", "prompt", "sft_response", "rlhf_response"])}


def evaluation_suite(policy: EvaluatedPolicy, prompt_sets: Sequence[str]) -> list[AssetsDefinition]:
    """`eval_responses`, `toxicity_scores` (on RTP and each declared prompt set) and `auto_preference` of one policy
    against SFT, each kept current by `KEEP_CURRENT`."""
    gpu = {"group_name": policy.group, "pool": GPU_POOL, "key_prefix": policy.prefix,
           "automation_condition": KEEP_CURRENT}

    @asset(name="eval_responses", code_version=step_code_version("eval_responses"), kinds={"pytorch", "parquet"},
           ins={"sft_model": AssetIn(key="sft_model"), "policy": AssetIn(key=policy.asset),
                "eval_prompts": AssetIn(key="eval_prompts"),
                "sft_responses": AssetIn(key=AssetKey([*SFT_PREFIX, "eval_responses"]))}, **gpu,
           description=f"SFT and {policy.asset} responses to the held-out eval prompts (same generation settings "
                       "and seed for both; SFT's are sft_model/eval_responses, shared by every policy), and the "
                       "policy's KL to SFT on its own responses.")
    def eval_responses(context: AssetExecutionContext, config: SamplingConfig, preset: PresetResource,
                       compute: ComputeBackend,
                       artifacts: ArtifactStoreResource, sft_model: Manifest, policy: Manifest,
                       eval_prompts: Manifest, sft_responses: Manifest) -> Output[Manifest]:
        chosen = preset.get()
        evaluation = merged(chosen.evaluation, config)
        return run_step_and_publish(
            context, request=EvalResponsesRequest(evaluation=evaluation, kl_bound=chosen.ppo.kl_bound),
            preset=chosen, config=config,
            inputs={"sft_model": sft_model, "policy": policy, "eval_prompts": eval_prompts,
                    "sft_responses": sft_responses},
            compute=compute, artifacts=artifacts, preview=_responses_preview)

    @asset(name="auto_preference", code_version=step_code_version("auto_preference"), kinds={"pytorch"},
           ins={"eval_responses": AssetIn(key=policy.key("eval_responses")),
                "reward_model": AssetIn(key="reward_model"), "judge_model": AssetIn(key="judge_model")}, **gpu,
           description=f"Automatic pairwise judgement of {policy.asset} vs SFT on the eval prompts by an "
                       "independent judge (`judge_model`, or a configured one): win / tie / loss with Wilson CIs "
                       "and a sign test. The reward model PPO is optimised against is shown beside it, labelled "
                       "as such, never as the verdict.")
    def auto_preference(context: AssetExecutionContext, config: AutoPreferenceConfig,
                        preset: PresetResource, compute: ComputeBackend,
                        artifacts: ArtifactStoreResource, eval_responses: Manifest, reward_model: Manifest,
                        judge_model: Manifest) -> Output[Manifest]:
        chosen = preset.get()
        return run_step_and_publish(
            context, preset=chosen, config=config,
            request=AutoPreferenceRequest(evaluation=merged(chosen.evaluation, config), reward=chosen.reward,
                                          judge=chosen.judge),
            inputs={"eval_responses": eval_responses, "reward_model": reward_model, "judge_model": judge_model},
            compute=compute, artifacts=artifacts)

    toxicity = [toxicity_asset(policy, prompt_set) for prompt_set in (RTP, *prompt_sets)]
    return [eval_responses, *toxicity, auto_preference]


def toxicity_asset(policy: EvaluatedPolicy, prompt_set: str) -> AssetsDefinition:
    """One policy's toxicity evaluation on one prompt set (RealToxicityPrompts or a declared one): the same step,
    metrics, CIs and check for every set; the recipe's published figures are shown beside RTP's only."""
    source = "the RTP prompts (Gehman et al.)" if prompt_set == RTP else f"prompt set `{prompt_set}`"
    prompts_key = "rtp_prompts" if prompt_set == RTP else f"{prompt_set}_prompts"

    baseline = AssetKey([*SFT_PREFIX, toxicity_name(prompt_set)])

    @asset(name=toxicity_name(prompt_set), code_version=step_code_version("toxicity_scores"),
           kinds={"pytorch", "detoxify"},
           ins={"policy": AssetIn(key=policy.asset), "prompts": AssetIn(key=prompts_key),
                "toxicity_model": AssetIn(key="toxicity_model"), "sft_scores": AssetIn(key=baseline)},
           group_name=policy.group, pool=GPU_POOL, key_prefix=policy.prefix, automation_condition=KEEP_CURRENT,
           description=f"Detoxify toxicity of SFT vs {policy.asset} continuations of {source}: mean toxicity, "
                       "expected maximum toxicity and toxicity probability per model and the paired difference, each "
                       f"with a bootstrap 95% CI. SFT's scored continuations are {baseline.to_user_string()}, "
                       "shared by every policy.")
    def toxicity_scores(context: AssetExecutionContext, config: ToxicityScoresConfig,
                        preset: PresetResource, compute: ComputeBackend,
                        artifacts: ArtifactStoreResource, policy: Manifest,
                        prompts: Manifest, toxicity_model: Manifest, sft_scores: Manifest) -> Output[Manifest]:
        chosen = preset.get()
        return run_step_and_publish(
            context, preset=chosen, config=config,
            request=ToxicityScoresRequest(toxicity=toxicity_settings(merged(chosen.toxicity, config), prompt_set,
                                                                     prompts),
                                          prompt_set=prompt_set, sft_baseline=baseline.to_user_string()),
            inputs={"policy": policy, "prompts": prompts, "toxicity_model": toxicity_model, "sft_scores": sft_scores},
            compute=compute, artifacts=artifacts)

    return toxicity_scores


def sft_baseline(prompt_sets: Sequence[str]) -> list[AssetsDefinition]:
    """SFT's responses to the eval prompts and its scored continuations of every prompt set: sampled once, with the
    evaluation's settings and seed, and read by every policy's suite (which checks the settings match)."""
    gpu = {"group_name": EVALUATION_GROUP, "pool": GPU_POOL, "key_prefix": list(SFT_PREFIX),
           "automation_condition": KEEP_CURRENT}

    @asset(name="eval_responses", code_version=step_code_version("sft_responses"), kinds={"pytorch", "parquet"},
           ins={"sft_model": AssetIn(key="sft_model"), "eval_prompts": AssetIn(key="eval_prompts")}, **gpu,
           description="SFT's responses to the held-out eval prompts, sampled once with the evaluation's settings "
                       "and seed: the SFT side of every policy's eval_responses.")
    def sft_eval_responses(context: AssetExecutionContext, config: SamplingConfig, preset: PresetResource,
                           compute: ComputeBackend, artifacts: ArtifactStoreResource, sft_model: Manifest,
                           eval_prompts: Manifest) -> Output[Manifest]:
        chosen = preset.get()
        return run_step_and_publish(
            context, request=SFTResponsesRequest(evaluation=merged(chosen.evaluation, config)), preset=chosen,
            config=config,
            inputs={"sft_model": sft_model, "eval_prompts": eval_prompts}, compute=compute, artifacts=artifacts)

    return [sft_eval_responses, *(sft_toxicity_asset(prompt_set) for prompt_set in (RTP, *prompt_sets))]


def sft_toxicity_asset(prompt_set: str) -> AssetsDefinition:
    """SFT's scored continuations of one prompt set: the SFT rows of every policy's toxicity evaluation on it."""
    prompts_key = "rtp_prompts" if prompt_set == RTP else f"{prompt_set}_prompts"

    @asset(name=toxicity_name(prompt_set), code_version=step_code_version("sft_toxicity"),
           kinds={"pytorch", "detoxify"},
           ins={"sft_model": AssetIn(key="sft_model"), "prompts": AssetIn(key=prompts_key),
                "toxicity_model": AssetIn(key="toxicity_model")},
           group_name=EVALUATION_GROUP, pool=GPU_POOL, key_prefix=list(SFT_PREFIX), automation_condition=KEEP_CURRENT,
           description=f"SFT's k continuations of each `{prompts_key}` prompt, scored by the toxicity model, sampled "
                       "once with the evaluation's settings and seed: the SFT side of every policy's toxicity "
                       "evaluation on this prompt set.")
    def sft_toxicity_scores(context: AssetExecutionContext, config: ToxicityScoresConfig, preset: PresetResource,
                            compute: ComputeBackend, artifacts: ArtifactStoreResource, sft_model: Manifest,
                            prompts: Manifest, toxicity_model: Manifest) -> Output[Manifest]:
        chosen = preset.get()
        return run_step_and_publish(
            context, preset=chosen, config=config,
            request=SFTToxicityRequest(toxicity=toxicity_settings(merged(chosen.toxicity, config), prompt_set,
                                                                  prompts), prompt_set=prompt_set),
            inputs={"sft_model": sft_model, "prompts": prompts, "toxicity_model": toxicity_model},
            compute=compute, artifacts=artifacts)

    return sft_toxicity_scores


def toxicity_settings(spec: ToxicitySpec, prompt_set: str, prompts: Manifest) -> ToxicitySpec:
    """The toxicity settings a step runs with, recorded in its config: a declared prompt set's own source and prompt
    count, not RealToxicityPrompts' (which `spec.source` and `spec.num_prompts` describe)."""
    if prompt_set != RTP:
        spec = spec.model_copy(update={"source": str(prompts.config["source"]),
                                       "num_prompts": prompts.counts["prompts"]})
    return spec


def toxicity_name(prompt_set: str) -> str:
    """The name of a policy's toxicity asset on a prompt set: `toxicity_scores` for RTP (the recipe's key),
    `<set>_toxicity_scores` for a declared one."""
    return "toxicity_scores" if prompt_set == RTP else f"{prompt_set}_toxicity_scores"


def prompt_set_toxicity_keys(policy: EvaluatedPolicy, prompt_sets: Sequence[str]) -> dict[str, AssetKey]:
    """Declared prompt set → that policy's toxicity asset key (RTP's is in `SUITE`)."""
    return {name: policy.key(toxicity_name(name)) for name in prompt_sets}


def toxicity_keys(policy: EvaluatedPolicy, prompt_sets: Sequence[str]) -> dict[str, AssetKey]:
    """Every prompt set (`rtp` first) → that policy's toxicity asset key."""
    return {RTP: policy.key(toxicity_name(RTP)), **prompt_set_toxicity_keys(policy, prompt_sets)}


def suite_keys(policy: EvaluatedPolicy, prompt_sets: Sequence[str]) -> list[AssetKey]:
    """Every asset of a policy's evaluation suite."""
    return [policy.key(name) for name in SUITE] + list(prompt_set_toxicity_keys(policy, prompt_sets).values())


def curve_keys(policy: EvaluatedPolicy) -> list[AssetKey]:
    """The policy's over-optimisation curve, for a policy trained against the reward model; none otherwise."""
    return [policy.key("overoptimisation_curve")] if policy.optimises_reward_model else []


def sft_baseline_keys(prompt_sets: Sequence[str]) -> list[AssetKey]:
    """SFT's shared samples, read by every policy's suite."""
    return [AssetKey([*SFT_PREFIX, "eval_responses"]),
            *(AssetKey([*SFT_PREFIX, toxicity_name(prompt_set)]) for prompt_set in (RTP, *prompt_sets))]


def overoptimisation_asset(policy: EvaluatedPolicy) -> AssetsDefinition:
    """`overoptimisation_curve` of a policy trained against the reward model: proxy and judge gains against KL."""

    @asset(name="overoptimisation_curve", code_version=step_code_version("overoptimisation"),
           kinds={"pytorch", "parquet"}, group_name=policy.group, pool=GPU_POOL,
           key_prefix=policy.prefix, automation_condition=KEEP_CURRENT,
           ins={"policy": AssetIn(key=policy.asset), "sft_model": AssetIn(key="sft_model"),
                "eval_prompts": AssetIn(key="eval_prompts"), "reward_model": AssetIn(key="reward_model"),
                "judge_model": AssetIn(key="judge_model")},
           description=f"Reward over-optimisation curve of {policy.asset} (Gao et al. 2023): SFT, each snapshot "
                       "kept during training and the final policy, scored on the eval prompts by the reward model "
                       "it was optimised against and by the independent judge, plotted against KL to SFT; warns "
                       "when the proxy rises while the judge falls, naming where the judge peaked.")
    def overoptimisation_curve(context: AssetExecutionContext, config: SamplingConfig, preset: PresetResource,
                               compute: ComputeBackend, artifacts: ArtifactStoreResource, policy: Manifest,
                               sft_model: Manifest, eval_prompts: Manifest, reward_model: Manifest,
                               judge_model: Manifest) -> Output[Manifest]:
        chosen = preset.get()
        return run_step_and_publish(
            context, preset=chosen, config=config,
            request=OverOptimisationRequest(evaluation=merged(chosen.evaluation, config), reward=chosen.reward,
                                            judge=chosen.judge, final_step=PolicyReport.of(policy).steps),
            inputs={"policy": policy, "sft_model": sft_model, "eval_prompts": eval_prompts,
                    "reward_model": reward_model, "judge_model": judge_model},
            compute=compute, artifacts=artifacts)

    return overoptimisation_curve
