"""Test-session setup shared by every test module.

Eight fake CPU devices are requested before JAX is first imported, so the sharding tests run on a
real 8-device mesh instead of being skipped (STYLE.md rule 8). Code that does not use a mesh sees
device 0 only and is unaffected.
"""

import os

# Concurrent LAPACK calls from XLA:CPU into a multi-threaded OpenBLAS can deadlock (theory/simulate.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
