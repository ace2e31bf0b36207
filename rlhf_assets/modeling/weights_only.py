"""Forcing torch's weights-only unpickler on every `torch.load`, also where a library asks for the full one.

Stored files are untrusted: a `__reduce__` planted in a checkpoint runs under the full unpickler. torch reads
`TORCH_FORCE_WEIGHTS_ONLY_LOAD` at each `torch.load` call and lets it override a caller's `weights_only=False`
(`torch.serialization.load`), so setting it reaches every reader, ours or a library's (DeepSpeed, accelerate,
Detoxify). `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` asks for the opposite; both together make torch refuse every load, so
an inherited one is removed rather than left to fail each read with torch's less telling message. No torch import
here: the step runtime calls this before any library loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_FULL_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def force_weights_only() -> bool:
    """Every later `torch.load` in this process, and in the processes it starts, unpickles weights-only. Returns
    whether an inherited request for the full unpickler was removed (for the caller to say so)."""
    removed = os.environ.pop(FORCE_FULL_ENV, None) is not None
    os.environ[FORCE_WEIGHTS_ONLY_ENV] = "1"
    return removed


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """`force_weights_only` for the duration of a call into a library that unpickles in full (Detoxify), in any
    process; the environment is restored afterwards. Other threads' loads meanwhile are forced too, never relaxed."""
    saved = {name: os.environ.get(name) for name in (FORCE_WEIGHTS_ONLY_ENV, FORCE_FULL_ENV)}
    force_weights_only()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
