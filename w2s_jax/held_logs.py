"""Holding library log lines back while a command checks its input, so its one-line error stands alone.

``datasets``, ``transformers``, ``huggingface_hub``, orbax and absl log through Python's
``logging``; some log an error of their own just before raising it (``datasets`` does for a JSON
file it cannot parse), and the command's own one-line error would then come after two lines of
theirs. Inside :func:`held_library_logs` their records and Python warnings are kept: if the block
raises, they are dropped (the command's error says what went wrong); if it completes, they are
emitted then, in order, through the handlers they would have reached.

    with held_library_logs():
        rows = load_rows("data/train.jsonl")
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence

LIBRARY_LOGGERS = ("datasets", "transformers", "huggingface_hub", "tokenizers", "orbax", "absl")


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_library_logs(names: Sequence[str] = LIBRARY_LOGGERS) -> Iterator[None]:
    """Keeps the log records of the ``names`` loggers (and their children) and Python warnings
    until the block ends: dropped if it raises, emitted afterwards if it completes."""
    keep = _Keep()
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [keep]
        logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
    for record in keep.records:  # reached only when the block completed
        logging.getLogger(record.name).handle(record)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
