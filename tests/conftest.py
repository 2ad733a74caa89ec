"""Setup shared by every test module (pytest loads this file before any of them).

Eight fake CPU devices are requested before JAX is first imported, so the sharding tests run on a
real 8-device mesh on any machine instead of being skipped for want of accelerators (a skipped
test checks nothing). Code that does not use a mesh sees device 0 only and is unaffected.
"""

import os

# Concurrent LAPACK calls from XLA:CPU into a multi-threaded OpenBLAS can deadlock (theory/simulate.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import contextlib  # noqa: E402

import pytest  # noqa: E402

_FLOAT64_DIRS = {"theory", "core"}  # tests/theory and tests/core check the math in float64


@pytest.fixture(autouse=True)
def _float64_for_theory(request):
    """Run tests under tests/theory and tests/core in float64, one test at a time.

    ``jax.enable_x64`` is a context manager (not the global ``jax_enable_x64`` flag), so leaving a
    test restores float32 for the language-model tests in the same process.
    """
    parts = request.node.path.relative_to(request.config.rootpath).parts
    in_float64_dir = len(parts) > 1 and parts[0] == "tests" and parts[1] in _FLOAT64_DIRS
    import jax

    with jax.enable_x64(True) if in_float64_dir else contextlib.nullcontext():
        yield
