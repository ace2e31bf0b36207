"""The SageMaker job's entry point (`sagemaker_program`): start the configured step under the container contract.

The backend ships this file at the top of the source tarball as `rlhf_entry.py`, with the `rlhf_assets`
package and a `requirements.txt` beside it (the training toolkit installs those first). `RLHF_STEP`,
`RLHF_NUM_PROCESSES` and `RLHF_ACCELERATE_CONFIG` come from the job's environment; checkpoints go to
`/opt/ml/checkpoints`, which SageMaker syncs to S3 and restores after a spot interruption.
"""

import os
import sys
from pathlib import Path


def main() -> None:
    """Replace this process with the step (or `accelerate launch` of it on several processes or hosts)."""
    code_dir = str(Path(__file__).resolve().parent)
    sys.path.insert(0, code_dir)
    from rlhf_assets.compute.launch import step_command
    from rlhf_assets.contract import (
        ACCELERATE_CONFIG_ENV,
        CHECKPOINT_ENV,
        CONTAINER_CHECKPOINT_DIR,
        NUM_PROCESSES_ENV,
        STEP_ENV,
    )

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [code_dir, os.environ.get("PYTHONPATH")]))
    os.environ.setdefault(CHECKPOINT_ENV, str(CONTAINER_CHECKPOINT_DIR))
    command = step_command(os.environ[STEP_ENV], int(os.environ.get(NUM_PROCESSES_ENV, "1")),
                           os.environ.get(ACCELERATE_CONFIG_ENV) or None, os.environ)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
