"""Checks on the trained models: PPO must beat SFT on the reward model at equal length and stay within its KL bound.

The rules live in `eval/gates.py`, applied to the step's report by `eval/suite_gates.py` (which `policy_comparison`
shares). Blocking by default: a policy whose gain is not shown is not evaluated.
"""

from dagster import AssetCheckResult, AssetChecksDefinition, asset_check

from rlhf_assets.defs.common import gate_result
from rlhf_assets.eval.suite_gates import ppo_kl_gate, reward_gain_gate
from rlhf_assets.storage import Manifest


def policy_checks(blocking: bool) -> list[AssetChecksDefinition]:
    """`ppo_beats_sft` and `kl_within_bound` on `ppo_policy`."""

    @asset_check(asset="ppo_policy", blocking=blocking,
                 description="PPO's RM-score gain over SFT on the eval prompts at equal length: whole 95% CI above 0")
    def ppo_beats_sft(ppo_policy: Manifest) -> AssetCheckResult:
        """The whole point of PPO; a policy whose gain is not demonstrated should not be promoted or evaluated.
        Decided at equal length: a gain the reward model gives only for longer (or shorter) replies is not one."""
        return gate_result(reward_gain_gate(ppo_policy))

    @asset_check(asset="ppo_policy", blocking=blocking,
                 description="KL(PPO ‖ SFT) on the eval prompts: 95% bootstrap upper bound under the preset's bound")
    def kl_within_bound(ppo_policy: Manifest) -> AssetCheckResult:
        """A KL far above the bound means the policy drifted from SFT: reward hacking rather than alignment."""
        return gate_result(ppo_kl_gate(ppo_policy))

    return [ppo_beats_sft, kl_within_bound]
