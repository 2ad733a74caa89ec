"""Core tests run in float64, scoped per test so the LLM tests in the same process stay float32.

``jax.enable_x64`` is a context manager (not the global ``jax_enable_x64`` flag), so leaving a test
restores the default precision.
"""

import jax
import pytest


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield
