"""KL-penalty coefficient controllers (Ziegler et al. 2019, as in trlx).

The adaptive controller nudges β so the measured KL to the reference model tracks `target`:
`err = clip(KL / target − 1, −0.2, 0.2)`, `β ← β · (1 + err · n_steps / horizon)`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKLController:
    """β stays at its initial value (trlx's choice when `target` is None)."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; kept so the trainer treats both controllers alike."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """Proportional controller on log-space KL error, clipped to ±20% per horizon."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β towards the value that would give `target` KL, proportionally to the samples seen."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(init_kl_coef: float, target: float | None, horizon: int) -> KLController:
    """Adaptive when a KL target is set, fixed otherwise."""
    if target is None:
        return FixedKLController(init_kl_coef)
    return AdaptiveKLController(init_kl_coef, target, horizon)
