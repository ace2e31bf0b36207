"""The command that starts a step program, locally or inside a SageMaker container (no Dagster import here).

One process: `python -m rlhf_assets.steps.<step>`. Several: the same module under `accelerate launch` with the
preset's accelerate config (under torchrun when the preset has none); on a multi-instance SageMaker job the
machine count, this host's rank and the main host come from `SM_HOSTS` / `SM_CURRENT_HOST`, so ZeRO spans the
nodes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from rlhf_assets.contract import CURRENT_HOST_ENV, HOSTS_ENV

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def step_command(
    step: str, num_processes: int, accelerate_config: str | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The argv that runs `step` with `num_processes` processes per node."""
    module = f"rlhf_assets.steps.{step}"
    hosts = json.loads((env or {}).get(HOSTS_ENV, '["algo-1"]'))
    if num_processes <= 1 and len(hosts) <= 1:
        return [sys.executable, "-m", module]
    current = hosts.index((env or {}).get(CURRENT_HOST_ENV, hosts[0]))
    if not accelerate_config:
        # No accelerate config (a plain data-parallel step): torchrun starts the processes on CPUs and GPUs alike,
        # where `accelerate launch` without a config would start a single process on a machine without GPUs.
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes)]
        command += (["--nnodes", str(len(hosts)), "--node_rank", str(current), "--master_addr", hosts[0],
                     "--master_port", "29500"] if len(hosts) > 1 else ["--standalone"])
        return [*command, "-m", module]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes * len(hosts)),
               "--config_file", str(PACKAGE_ROOT / accelerate_config)]
    if len(hosts) > 1:
        command += ["--num_machines", str(len(hosts)), "--machine_rank", str(current),
                    "--main_process_ip", hosts[0], "--main_process_port", "29500"]
    return [*command, "-m", module]
