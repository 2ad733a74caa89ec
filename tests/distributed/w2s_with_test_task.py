"""``w2s`` with the pipeline tests' task registered (``tests/pipeline/tiny_run.py``), for running the
tiny experiment through the command line in subprocesses: ``python -m
tests.distributed.w2s_with_test_task run ...``."""

import os
import sys
import time

import tests.pipeline.tiny_run  # noqa: F401 -- registers the test task
from w2s_jax.cli import main
from w2s_jax.pipeline.artifacts import JsonlLog
from w2s_jax.train.checkpoint import Checkpointer

# W2S_TEST_PAUSE_S: a pause after every appended chunk and every checkpoint, so that a test can
# kill a process between two of them whatever the machine's speed (the tiny model labels a chunk
# in milliseconds, faster than a test can poll).
PAUSE_S = float(os.environ.get("W2S_TEST_PAUSE_S") or 0)


def _then_pause(method):
    def paused(*args, **kwargs):
        result = method(*args, **kwargs)
        time.sleep(PAUSE_S)
        return result

    return paused


if PAUSE_S > 0:
    JsonlLog.append = _then_pause(JsonlLog.append)
    Checkpointer.save = _then_pause(Checkpointer.save)

if __name__ == "__main__":
    sys.exit(main())
