"""Loading a transformers model only when its checkpoint holds exactly the model's weights.

`from_pretrained` initialises a weight the checkpoint lacks at random, drops one the model lacks, and only logs
it: a truncated or edited checkpoint would train, score or generate with random layers while its lineage looks
sound. Every model a step loads goes through `load_complete`, which refuses such a checkpoint with the keys named.
Where a step deliberately starts a new head on a trunk (a reward model from the SFT model), it says which keys
may be missing or left over.
"""

from __future__ import annotations

from typing import Any


class IncompleteCheckpointError(ValueError):
    """A checkpoint without some of the model's weights, with weights the model has not, or of other shapes."""


def load_complete(model_class: Any, path: Any, *, new_head: tuple[str, ...] = (),
                  dropped_head: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """`model_class.from_pretrained(path, **kwargs)`, refusing a checkpoint that does not match the model exactly.

    `new_head`: prefixes of weights the step initialises itself (they may be missing); `dropped_head`: prefixes
    of checkpoint weights the new model has no place for (e.g. the language-model head under a reward head).
    """
    model, info = model_class.from_pretrained(path, output_loading_info=True, **kwargs)
    missing = sorted(key for key in info["missing_keys"] if not key.startswith(new_head or ("\0",)))
    unexpected = sorted(key for key in info["unexpected_keys"] if not key.startswith(dropped_head or ("\0",)))
    mismatched = sorted(str(entry[0] if isinstance(entry, tuple) else entry) for entry in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        raise IncompleteCheckpointError(
            f"{path}: the checkpoint does not hold exactly the weights of {type(model).__name__}: "
            f"missing {missing[:5]} ({len(missing)}), not in the model {unexpected[:5]} ({len(unexpected)}), "
            f"of another shape {mismatched[:5]} ({len(mismatched)}); re-materialize the asset that wrote it")
    return model
