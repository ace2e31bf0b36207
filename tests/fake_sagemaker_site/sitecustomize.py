"""Put on PYTHONPATH by `tests/test_sagemaker.py` so a `dagster` CLI process gets the fake SageMaker container.

Only the test that launches the CLI against the moto server sets this; the product never imports it.
"""

import os
from pathlib import Path

if os.environ.get("FAKE_SAGEMAKER_SCRATCH"):
    from tests.sagemaker_container import FakeSageMakerContainer

    FakeSageMakerContainer(Path(os.environ["FAKE_SAGEMAKER_SCRATCH"])).install()
