"""The AWS tier's shared set-up."""

from collections.abc import Iterator

import pytest
from dagster._core.pipes import utils as pipes_utils


@pytest.fixture(autouse=True, scope="module")
def prompt_pipes_polling() -> Iterator[None]:
    """Dagster's Pipes readers sleep 1 s per loop, so each SageMaker job of these tests ended up to 2 s after its
    step had finished; the readers are the real ones, only their wait between looks is shorter."""
    with pytest.MonkeyPatch.context() as patch:  # per module, so it also covers the modules' expensive fixtures
        patch.setattr(pipes_utils, "DEFAULT_SLEEP_INTERVAL", 0.05)
        yield
