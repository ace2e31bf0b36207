"""A program the warm-worker tests run both as `python -m tests.warm_probe` and through the worker.

It prints what a step would see (argv, working directory, an environment variable, stdin, whether libraries were
already imported, a seeded torch computation on this process's threads) and exits as told: a code, an exception,
or waiting for a signal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    preloaded = {name: name in sys.modules for name in ("torch", "transformers", "rlhf_assets.steps.sft")}
    import torch

    torch.manual_seed(0)
    weights = torch.randn(64, 64)
    value = float(torch.linalg.matrix_power(weights @ weights.T / 64, 3).sum())
    mode, *rest = sys.argv[1:]
    report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "probe_env": os.environ.get("PROBE_VALUE"),
              "stdin": sys.stdin.read() if mode == "echo" else "", "preloaded": preloaded, "torch_value": value,
              "torch_threads": torch.get_num_threads(), "name": __name__}
    print(json.dumps(report), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if mode == "exit":
        sys.exit(int(rest[0]))
    if mode == "raise":
        raise RuntimeError("probe failed on purpose")
    if mode == "wait":
        Path(rest[0]).write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)
