"""Forwarding Hugging Face Trainer progress to the step runtime, and the loss-curve metadata built from it."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rlhf_assets.steps.runtime import StepRuntime


class RuntimeProgressCallback(TrainerCallback):
    """Logs every Trainer log event to Dagster with step/total and keeps the curve for the metadata."""

    def __init__(self, runtime: StepRuntime) -> None:
        self.runtime = runtime
        self.history: list[dict[str, float]] = []
        self.started = time.monotonic()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs:
            return
        numbers = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        self.history.append({"step": float(state.global_step), **numbers})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in numbers.items() if k in _SHOWN)
        elapsed = time.monotonic() - self.started
        self.runtime.log(f"step {state.global_step}/{state.max_steps} ({elapsed:.0f}s) {shown}")


_SHOWN = ("loss", "eval_loss", "accuracy", "eval_accuracy", "learning_rate", "grad_norm", "epoch")


def curve_markdown(history: list[dict[str, float]], keys: tuple[str, ...], title: str) -> str:
    """A PNG plot (inline, which the Dagster UI renders) plus the same points as a table."""
    rows = [h for h in history if any(k in h for k in keys)]
    if not rows:
        return f"### {title}\n\n(no points logged)"
    lines = [f"### {title}", "", _plot_png(rows, keys, title), "", "| step | " + " | ".join(keys) + " |"]
    lines.append("|---" * (len(keys) + 1) + "|")
    for row in rows:
        cells = [f"{row[k]:.4f}" if k in row else "" for k in keys]
        lines.append(f"| {int(row['step'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_png(rows: list[dict[str, float]], keys: tuple[str, ...], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"
