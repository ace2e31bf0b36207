"""Blinded pairwise tasks: which response is shown as A is drawn per prompt with a seed and recorded.

Annotators never see model names; the recorded order (`rlhf_shown_as`) is the only key that turns an
"A / B / tie" answer back into an RLHF win, tie or loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import pandas as pd

# What annotators read before their first pair: a content warning, the task, worked examples, when to tie.
DEFAULT_GUIDELINES_FILE = Path(__file__).parent / "guidelines.md"


class Choice(Enum):
    """What an annotator can answer about a pair, in shown (blinded) terms."""

    a = "A"
    b = "B"
    tie = "tie"


class TaskFileError(ValueError):
    """A tasks file that cannot be read, naming the file, row and field."""


@dataclass(frozen=True)
class PairwiseTask:
    """One prompt with two responses in shown order; `rlhf_shown_as` says which letter the RLHF response is."""

    task_id: str
    prompt_id: int
    prompt: str
    response_a: str
    response_b: str
    rlhf_shown_as: str

    def outcome(self, choice: Choice) -> str:
        """The RLHF model's 'win' / 'tie' / 'loss' for an annotator's shown-order choice."""
        if choice is Choice.tie:
            return "tie"
        return "win" if choice.value == self.rlhf_shown_as else "loss"

    def blinded(self) -> dict[str, str]:
        """What an annotator (or a Ground Truth worker) may see: no model names, no order key."""
        return {"task_id": self.task_id, "prompt": self.prompt, "response_a": self.response_a,
                "response_b": self.response_b}


def read_guidelines(path: str | None) -> str:
    """The annotator guidelines (content warning first) from `path`, or the project's default ones."""
    source = Path(path) if path else DEFAULT_GUIDELINES_FILE
    try:
        text = source.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: cannot read the annotator guidelines ({error})") from None
    if not text:
        raise ValueError(f"{source}: the annotator guidelines are empty")
    return text


def build_tasks(responses: pd.DataFrame, rlhf_first: Sequence[bool] | None = None,
                guidelines: str = "") -> list[PairwiseTask]:
    """One task per eval prompt, its shown order drawn from the OS's cryptographic random source.

    Nothing in the config or the data predicts which side is RLHF (a seeded draw did: `default_rng(0)` named it
    for 100 of 100 tasks); the order exists only in the tasks, i.e. in the `human_eval_tasks` artifact and the
    owner-only labeling database. Task ids are `<batch>-<random hex>`: the batch hashes the responses and the
    guidelines, so labels for an old policy (or given under other guidelines) never count for a new batch, and the
    rest is random, so ids reveal neither the prompt nor
    the order and cannot be enumerated. `rlhf_first` fixes the order (tests).
    """
    missing = {"prompt_id", "prompt", "sft_response", "rlhf_response"} - set(responses.columns)
    if missing:
        raise ValueError(f"eval responses lack column(s) {sorted(missing)}")
    order = list(rlhf_first) if rlhf_first is not None else [secrets.randbelow(2) == 1 for _ in range(len(responses))]
    if len(order) != len(responses):
        raise ValueError(f"rlhf_first has {len(order)} entries for {len(responses)} responses")
    rows = [(int(row.prompt_id), str(row.prompt), str(row.sft_response), str(row.rlhf_response))
            for row in responses.itertuples(index=False)]
    batch = hashlib.sha256(json.dumps([rows, guidelines]).encode()).hexdigest()[:12]
    return [
        PairwiseTask(
            task_id=f"{batch}-{secrets.token_hex(8)}", prompt_id=prompt_id, prompt=prompt,
            response_a=rlhf if first else sft, response_b=sft if first else rlhf,
            rlhf_shown_as="A" if first else "B",
        )
        for (prompt_id, prompt, sft, rlhf), first in zip(rows, order, strict=True)
    ]


def batch_id(tasks: Iterable[PairwiseTask]) -> str:
    """The batch hash shared by every task id of one `build_tasks` call."""
    ids = {task.task_id.rsplit("-", 1)[0] for task in tasks}
    if len(ids) != 1:
        raise ValueError(f"tasks come from {len(ids)} batches, expected one")
    return ids.pop()


def write_tasks(tasks: Iterable[PairwiseTask], path: Path) -> None:
    """JSON Lines with the order key: the file the app loads and `human_eval_results` un-blinds with."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the un-blinding key
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(asdict(task), ensure_ascii=False) + "\n")


def read_tasks(path: Path) -> list[PairwiseTask]:
    """Tasks from `write_tasks`' format; a bad line is reported with its file, line and field."""
    tasks = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskFileError(f"{path}:{number}: not JSON ({error.msg})") from None
            try:
                task = PairwiseTask(**{field: record[field] for field in PairwiseTask.__dataclass_fields__})
            except KeyError as error:
                raise TaskFileError(f"{path}:{number}: missing field {error.args[0]!r}") from None
            if task.rlhf_shown_as not in ("A", "B"):
                raise TaskFileError(f"{path}:{number}: field 'rlhf_shown_as' must be A or B")
            tasks.append(task)
    return tasks
