"""Reading DeepSpeed checkpoint files without letting them run code.

DeepSpeed reads its model and ZeRO optimizer files with `torch.load(weights_only=False)`, the full unpickler:
a `__reduce__` planted in `optim_states.pt` by anyone who can write the checkpoint prefix would run inside the
training job on resume. Every DeepSpeed checkpoint read in a step process goes through `restricted_load`
instead: torch's weights-only unpickler, which builds tensors, containers and plain values, plus the three
DeepSpeed classes the recipe's checkpoints hold (below). A pickle naming any other callable is refused before
anything in it runs. Accelerate and the Trainer already read their
own files (optimizer, scheduler, RNG) weights-only. Behind both, every step process forces the weights-only
unpickler on every `torch.load` (`steps/runtime.refuse_full_unpickling`), so a DeepSpeed reader not routed here
refuses these classes rather than unpickling in full.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

# (module, class) of what DeepSpeed 0.19's ZeRO-2 bf16 checkpoints (the recipe's launch) pickle besides tensors
# and containers: exactly the globals `torch.serialization.get_unsafe_globals_in_checkpoint` finds in the files a
# real run writes (`tests/process/test_ppo_distributed.py` checks that the two agree). Each is plain state: an
# enum, a dataclass of two ints, an object holding a scale; none runs code when rebuilt. A launch writing other
# classes (fp16's `DynamicLossScaler`) is refused until they are checked and added here.
DEEPSPEED_STATE_CLASSES = (
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file that names code (or a class outside the allowed list) where only state belongs."""


def deepspeed_state_types() -> list[type]:
    """The allowed DeepSpeed classes, imported (they are what the unpickler compares against)."""
    import importlib

    return [getattr(importlib.import_module(module), name) for module, name in DEEPSPEED_STATE_CLASSES]


def restricted_load(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load` with the weights-only unpickler and DeepSpeed's own state classes allowed, nothing else."""
    try:
        with torch.serialization.safe_globals(deepspeed_state_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = str(error).partition("WeightsUnpickler error:")[2].strip().split("\n\n")[0].strip()
        raise UnsafeCheckpointError(f"{path}: refused to load: it holds more than checkpoint state "
                                    f"({(detail or str(error))[:300]})") from None


def _engine_load(self: Any, path: str, map_location: Any = None) -> Any:
    return restricted_load(path, map_location)


def restrict_deepspeed_loading() -> None:
    """Route DeepSpeed's checkpoint reads in this process (`TorchCheckpointEngine.load`, which every engine and
    ZeRO optimizer uses) through `restricted_load`; called by steps launched with DeepSpeed before they resume."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    TorchCheckpointEngine.load = _engine_load
