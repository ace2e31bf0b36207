"""Issue 26 (5): policy snapshots rebuild the policy as it was, and the over-optimisation curve warns when the proxy
rises while the judge falls, naming where the judge peaked."""

from pathlib import Path

import pytest
import torch

from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.overoptimisation import CurvePoint, curve_plot, curve_table, over_optimisation_warning
from rlhf_assets.ppo.snapshots import apply_snapshot, copy_snapshots, read_index, save_snapshot, snapshot_steps
from rlhf_assets.ppo.value_head import add_lora, freeze_bottom_layers
from tests.ppo_toys import tiny_gptj

pytestmark = pytest.mark.unit


def test_snapshot_steps_are_evenly_spaced_inside_the_run() -> None:
    assert snapshot_steps(48, 4) == [10, 19, 29, 38]
    assert snapshot_steps(2000, 3) == [500, 1000, 1500]
    assert snapshot_steps(2, 4) == [1] and snapshot_steps(100, 0) == []


def _perturbed(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)


def test_a_snapshot_of_the_unfrozen_layers_rebuilds_the_policy_from_sft(tmp_path: Path) -> None:
    policy = tiny_gptj()
    freeze_bottom_layers(policy, 1)
    _perturbed(policy, 1)
    save_snapshot(tmp_path / "ckpt", 7, policy, None, {"rollout_kl": 0.5})
    saved = read_index(tmp_path / "ckpt")
    assert saved == [{"step": 7, "file": "step-00000007.safetensors", "lora": None, "rollout_kl": 0.5}]
    assert copy_snapshots(tmp_path / "ckpt", tmp_path / "artifact") == 1
    rebuilt = apply_snapshot(tiny_gptj(), tmp_path / "artifact", saved[0])
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(rebuilt(ids).logits, policy(ids).logits)
    assert not torch.allclose(tiny_gptj()(ids).logits, policy(ids).logits), "the snapshot differs from SFT"


def test_a_lora_snapshot_is_merged_into_the_sft_weights(tmp_path: Path) -> None:
    policy = add_lora(tiny_gptj(), 4, 8.0)
    _perturbed(policy, 2)
    save_snapshot(tmp_path, 3, policy, {"rank": 4, "alpha": 8.0}, {})
    save_snapshot(tmp_path, 1, policy, {"rank": 4, "alpha": 8.0}, {})
    assert [e["step"] for e in read_index(tmp_path)] == [1, 3], "ordered by step"
    rebuilt = apply_snapshot(tiny_gptj(), tmp_path, read_index(tmp_path)[1])
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(rebuilt(ids).logits, policy(ids).logits, rtol=1e-4, atol=1e-5)


def _point(step: int, kl: float, proxy: float, judge: float) -> CurvePoint:
    def around(value: float) -> Interval:
        return Interval(value, value - 0.05, value + 0.05, 0.95)

    return CurvePoint(step, around(kl), around(proxy), around(judge))


def test_the_warning_names_the_judges_peak_when_the_proxy_keeps_rising() -> None:
    rising = [_point(0, 0, 0, 0), _point(10, 1, 0.2, 0.1), _point(20, 2, 0.4, 0.15)]
    assert over_optimisation_warning(rising) is None, "both rise: optimisation helps"
    hacked = [*rising, _point(30, 4, 0.6, 0.05), _point(40, 7, 0.8, -0.1)]
    warning = over_optimisation_warning(hacked)
    assert warning is not None and "the judge peaked at step 20" in warning and "to step 40" in warning
    both_fall = [*rising, _point(30, 4, 0.3, 0.05)]
    assert over_optimisation_warning(both_fall) is None, "the proxy fell too: not over-optimisation"
    assert "| 40 | 7.00 [6.95, 7.05] | +0.800 [+0.750, +0.850] | -0.100 [-0.150, -0.050] |" in curve_table(hacked)
    assert curve_plot(hacked).startswith("![over-optimisation curve](data:image/png;base64,")
