"""Put on PYTHONPATH by `tests/aws/test_sagemaker.py` so a `dagster` CLI
process gets the SageMaker platform harness (the container is the real toolkit).

Only the test that launches the CLI against the moto server sets this; the product never imports it.
"""

import os
from pathlib import Path

if os.environ.get("FAKE_SAGEMAKER_SCRATCH"):
    from tests.sagemaker_platform import SageMakerPlatform

    SageMakerPlatform(Path(os.environ["FAKE_SAGEMAKER_SCRATCH"])).install()
