"""The test suite. Imported before `tests/conftest.py`, so what is set here holds before torch is loaded."""

import os

# Under pytest-xdist (`-n 2`, pyproject.toml) two workers share the machine's cores: every process they start
# computes on one thread, so two workers' step processes do not oversubscribe the cores (idle OpenMP threads spin
# while they wait for a core). A run without workers keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
