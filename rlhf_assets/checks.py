"""Asset checks: the regressions an RLHF run must not hide, visible in the UI beside each asset.

PPO must beat SFT on the reward model and stay within the preset's KL bound; eval responses must not be
empty or degenerate; RLHF must not be significantly more toxic than SFT; datasets must have no empty or
duplicate rows. Checks on assets with downstream work are blocking unless `RLHF_BLOCKING_CHECKS=0`: a failed
check then stops the run before the downstream assets (e.g. no evaluation of a policy that lost to SFT).
"""

import os

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    MetadataValue,
    asset_check,
)

from rlhf_assets.assets.data import eval_prompts, preference_dataset
from rlhf_assets.assets.evaluation import PROMPTS_FILE, auto_preference, eval_responses, rtp_prompts, toxicity_scores
from rlhf_assets.assets.training import ppo_policy
from rlhf_assets.presets import EvalSpec
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.storage import Manifest

BLOCKING = os.environ.get("RLHF_BLOCKING_CHECKS", "1") != "0"


@asset_check(asset=ppo_policy, blocking=BLOCKING, description="RM score of PPO responses > SFT's on the eval prompts")
def ppo_beats_sft(ppo_policy: Manifest) -> AssetCheckResult:
    """The whole point of PPO; a policy that lost to its starting point should not be promoted or evaluated."""
    m = ppo_policy.metrics
    passed = m["eval_ppo_reward_mean"] > m["eval_sft_reward_mean"]
    return AssetCheckResult(
        passed=passed,
        description=f"PPO {m['eval_ppo_reward_mean']:+.3f} vs SFT {m['eval_sft_reward_mean']:+.3f}; gain "
                    f"{m['eval_reward_gain']:+.3f} [{m['eval_reward_gain_ci_low']:+.3f}, "
                    f"{m['eval_reward_gain_ci_high']:+.3f}]",
        metadata={"gain": m["eval_reward_gain"], "gain_ci_low": m["eval_reward_gain_ci_low"],
                  "gain_ci_high": m["eval_reward_gain_ci_high"]},
    )


@asset_check(asset=ppo_policy, blocking=BLOCKING, description="KL(PPO ‖ SFT) on the eval prompts under the bound")
def kl_within_bound(ppo_policy: Manifest) -> AssetCheckResult:
    """A KL far above the bound means the policy drifted from SFT: reward hacking rather than alignment."""
    kl, bound = ppo_policy.metrics["eval_kl_to_sft"], ppo_policy.metrics["eval_kl_bound"]
    return AssetCheckResult(passed=kl < bound, description=f"KL {kl:.2f} vs bound {bound}",
                            metadata={"kl": kl, "bound": bound})


@asset_check(asset=eval_responses, blocking=BLOCKING, description="Responses not empty, repeated or too short")
def responses_not_degenerate(eval_responses: Manifest) -> AssetCheckResult:
    """A collapsed policy (empty or identical answers) makes every downstream comparison meaningless."""
    spec = EvalSpec.model_validate(eval_responses.config["evaluation"])
    m, problems = eval_responses.metrics, []
    for model in ("sft", "rlhf"):
        if m[f"{model}_empty_share"] > spec.max_empty_share:
            problems.append(f"{model}: {m[f'{model}_empty_share']:.0%} empty (max {spec.max_empty_share:.0%})")
        if m[f"{model}_duplicate_share"] > spec.max_duplicate_share:
            problems.append(f"{model}: {m[f'{model}_duplicate_share']:.0%} duplicates "
                            f"(max {spec.max_duplicate_share:.0%})")
        if m[f"{model}_mean_words"] < spec.min_mean_words:
            problems.append(f"{model}: mean {m[f'{model}_mean_words']:.1f} words (min {spec.min_mean_words})")
    return AssetCheckResult(passed=not problems, description="; ".join(problems) or "responses look healthy",
                            metadata={k: v for k, v in m.items() if k.endswith(("_share", "_words"))})


@asset_check(asset=toxicity_scores, description="RLHF not significantly more toxic than SFT (paired 95% CI)")
def toxicity_not_worse(toxicity_scores: Manifest) -> AssetCheckResult:
    """RLHF should not make the model more toxic; the check fails only when the CI says so, not on noise."""
    m = toxicity_scores.metrics
    low, high = m["difference_mean_toxicity_ci_low"], m["difference_mean_toxicity_ci_high"]
    return AssetCheckResult(
        passed=low <= 0, severity=AssetCheckSeverity.ERROR,
        description=f"mean toxicity RLHF − SFT {m['difference_mean_toxicity']:+.4f} [{low:+.4f}, {high:+.4f}]",
        metadata={"difference": m["difference_mean_toxicity"], "ci_low": low, "ci_high": high},
    )


@asset_check(asset=auto_preference, description="The automatic judge does not prefer SFT over RLHF more often")
def rlhf_not_dispreferred(auto_preference: Manifest) -> AssetCheckResult:
    """Losses outnumbering wins is the automatic judge's regression signal between human evaluations."""
    wins, losses = auto_preference.counts["wins"], auto_preference.counts["losses"]
    return AssetCheckResult(passed=wins >= losses, description=f"{wins} wins, {losses} losses",
                            metadata={"wins": wins, "losses": losses})


def _clean_rows_check(
    asset: AssetsDefinition, files: tuple[str, ...], columns: tuple[str, ...]
) -> AssetChecksDefinition:
    """A check that a dataset's files have no row with an empty text column and no duplicate row."""
    name = asset.key.to_python_identifier()

    @asset_check(asset=asset, name=f"{name}_rows_clean", blocking=BLOCKING,
                 description=f"No empty {', '.join(columns)} and no duplicate rows")
    def check(dataset: Manifest, artifacts: ArtifactStoreResource) -> AssetCheckResult:
        directory = artifacts.store().local_path(dataset.uri)
        frame = pd.concat([pd.read_parquet(directory / file) for file in files], ignore_index=True)
        empty = int(frame[list(columns)].apply(lambda c: c.astype(str).str.strip() == "").any(axis=1).sum())
        duplicates = int(frame.duplicated(list(columns)).sum())
        return AssetCheckResult(passed=empty == 0 and duplicates == 0,
                                description=f"{empty} rows with an empty field, {duplicates} duplicate rows "
                                            f"of {len(frame)}",
                                metadata={"rows": len(frame), "empty_rows": empty, "duplicate_rows": duplicates,
                                          "files": MetadataValue.text(", ".join(files))})

    return check


preference_rows_clean = _clean_rows_check(preference_dataset, ("train.parquet", "test.parquet"),
                                          ("prompt", "chosen", "rejected"))
eval_prompts_rows_clean = _clean_rows_check(eval_prompts, ("eval_prompts.parquet",), ("prompt",))
rtp_prompts_rows_clean = _clean_rows_check(rtp_prompts, (PROMPTS_FILE,), ("prompt_text",))

all_checks = [ppo_beats_sft, kl_within_bound, responses_not_degenerate, toxicity_not_worse, rlhf_not_dispreferred,
              preference_rows_clean, eval_prompts_rows_clean, rtp_prompts_rows_clean]
