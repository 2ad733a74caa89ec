"""``w2s`` with the pipeline tests' task registered (``tests/pipeline/tiny_run.py``), for running the
tiny experiment through the command line in subprocesses: ``python -m
tests.distributed.w2s_with_test_task run ...``."""

import sys

import tests.pipeline.tiny_run  # noqa: F401 -- registers the test task
from w2s_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
