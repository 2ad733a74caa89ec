"""Data rows from local files or the Hugging Face Hub, through the ``datasets`` library.

    load_rows("data/train.jsonl")                      # .json, .jsonl, .csv or .parquet file
    load_rows("openai/gsm8k", hub_config="main", split="test", limit=100)
    load_examples(task, "data/test.jsonl")             # every row validated by the task up front

A source is a local file when it exists, has a data-file extension, or starts with ``/``, ``./``,
``../`` or ``~``; anything else is a Hub dataset name (needs the network). Remote code is never run.
``datasets`` is imported on first use: it takes seconds to import. Its log lines during a load are
held back (``w2s_jax.held_logs``): a file it cannot read gives one error, ours, naming the file.

Two rows are the same question for the split-overlap check when their :func:`overlap_key` agree:
Unicode NFKC, case folded, every run of whitespace one space, no leading or trailing space.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from w2s_jax.held_logs import held_library_logs
from w2s_jax.tasks.base import DataError, Example, Task

# Extension -> the `datasets` packaged builder that reads it.
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# Extensions that mark a source as a file even though they are not supported, so the error is
# "unsupported extension" rather than a failed Hub look-up.
_FILE_LIKE = {".txt", ".tsv", ".gz", ".zip", ".xlsx", ".xls", ".arrow", ".xml", ".yaml", ".yml",
              ".pkl", ".pickle", ".npy", ".npz", ".feather", ".orc", ".avro", ".sqlite", ".db"}


def is_local(source: str) -> bool:
    """Whether ``source`` names a local file rather than a Hub dataset (see the module docstring)."""
    suffix = Path(source).suffix.lower()
    return (Path(source).expanduser().exists() or suffix in BUILDERS or suffix in _FILE_LIKE
            or source.startswith(("/", "./", "../", "~")))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")


def load_rows(source: str, *, split: str = "train", hub_config: str | None = None,
              limit: int | None = None) -> list[dict]:
    """The rows of a data file or Hub dataset split, as plain dicts.

    Arguments:
      source: a .json (array or JSON lines), .jsonl, .csv or .parquet file, or a Hub dataset name.
      split: the split of a Hub dataset (a local file is one split).
      hub_config: the Hub dataset's configuration (e.g. ``"main"`` for ``openai/gsm8k``).
      limit: keep the first ``limit`` rows (None or 0: all).
    Returns:
      one dict per row, in file order.
    Raises:
      FileNotFoundError: a local source that does not exist (named in the message).
      ValueError: an unsupported extension (the supported ones are listed), a file that cannot be
        parsed (:class:`DataError`), or a Hub dataset that cannot be loaded.
    """
    return load_rows_counted(source, split=split, hub_config=hub_config, limit=limit)[0]


def load_rows_counted(source: str, *, split: str = "train", hub_config: str | None = None,
                      limit: int | None = None) -> tuple[list[dict], int]:
    """:func:`load_rows`, and the number of rows the source holds in all (more than returned when
    ``limit`` cuts it; fewer than ``limit`` tells a caller its request could not be met)."""
    _check_limit(limit)
    if is_local(source):
        dataset = _load_file(source)
    else:
        dataset = _load_hub(source, split, hub_config)
    total = len(dataset)
    if limit:
        dataset = dataset.select(range(min(limit, total)))
    return dataset.to_list(), total


def _load_file(source: str):
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{source}: data file not found")
    if not path.is_file():
        raise DataError(f"{source}: is a directory; give a {', '.join(BUILDERS)} file")
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{source}: unsupported data file extension {path.suffix!r}; "
                        f"supported: {', '.join(BUILDERS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{source}: the file is empty")
    import datasets

    datasets.disable_progress_bars()  # loading a small file prints no bars over the run's output
    try:
        with held_library_logs():
            return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # datasets wraps parser errors; name the file and the cause
        cause = error.__cause__ or error.__context__ or error
        detail = f"{type(cause).__name__}: {cause}".strip().rstrip(":")
        raise DataError(f"{source}: cannot be read as {builder} ({detail})") from error


def _load_hub(source: str, split: str, hub_config: str | None):
    import datasets

    try:
        with held_library_logs():
            return datasets.load_dataset(source, hub_config, split=split)
    except Exception as error:
        raise ValueError(f"{source}: not a local file, and loading it as a Hugging Face Hub dataset "
                         f"(config {hub_config!r}, split {split!r}) failed: {type(error).__name__}: "
                         f"{error}. Give a local .json/.jsonl/.csv/.parquet file, or check the name "
                         "and the network") from error


def load_examples(task: Task, source: str, *, split: str = "train", hub_config: str | None = None,
                  limit: int | None = None) -> list[Example]:
    """The rows of ``source`` validated by ``task`` (see :func:`load_rows` for the arguments).

    Every row is checked before anything runs, so a bad row fails in seconds, not after hours of
    generation; the :class:`DataError` names the source, the row (0-based) and the field.
    A split where no row has a gold answer gets a warning: methods and metrics that need gold
    answers will fail on it.
    """
    rows = load_rows(source, split=split, hub_config=hub_config, limit=limit)
    name = source if is_local(source) else f"{source} [{split}]"
    if not rows:
        raise DataError(f"{name}: no rows")
    examples = []
    for index, row in enumerate(rows):
        example = task.example(row, index, name)
        if example.index != index:
            raise ValueError(f"task {task.name!r} returned index {example.index} for row {index} of {name}")
        examples.append(example)
    return examples


def overlap_key(text: str) -> str:
    """``text`` as the split-overlap check compares it: Unicode NFKC, case folded, every run of
    whitespace one space, stripped (``"The  Cat\n"`` and ``"the cat"`` are the same question)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def split_overlap(train: list[Example], test: list[Example]) -> list[tuple[int, int]]:
    """``(test index, training index)`` of every test question equal to a training question up to
    :func:`overlap_key`, in test order (the first training row of each key)."""
    seen: dict[str, int] = {}
    for example in train:
        seen.setdefault(overlap_key(example.question), example.index)
    keys = ((example.index, overlap_key(example.question)) for example in test)
    return [(index, seen[key]) for index, key in keys if key in seen]
