"""Data rows from tiny local files of each supported kind, and the errors a user can fix."""

from __future__ import annotations

import json

import pytest

from w2s_jax.tasks import DataError, get_task
from w2s_jax.tasks.data import is_local, load_examples, load_rows

ROWS = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "What is 10 - 4?", "answer": "#### 6"},
        {"question": "What is 7 * 2?", "answer": "#### 14"}]


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        import csv

        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_load_rows_each_format(tmp_path, suffix):
    path = _write(tmp_path / f"train{suffix}", ROWS)
    assert load_rows(str(path)) == ROWS
    assert load_rows(str(path), limit=2) == ROWS[:2]
    assert load_rows(str(path), limit=0) == ROWS  # 0 = all, as data.n_train = 0
    assert load_rows(str(path), limit=10) == ROWS


def test_lists_survive_jsonl(tmp_path):
    rows = [{"question": "q", "options": ["yes", "no"], "label": 1}]
    assert load_rows(str(_write(tmp_path / "c.jsonl", rows))) == rows


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl: data file not found"):
        load_rows(str(missing))
    with pytest.raises(FileNotFoundError, match="data file not found"):
        load_rows("./data/absent-dir/x")  # a relative path, not a Hub name


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("hello\n")
    with pytest.raises(DataError, match=r"rows.txt: unsupported data file extension '.txt'; "
                                        r"supported: .json, .jsonl, .csv, .parquet"):
        load_rows(str(path))


def test_empty_and_broken_files_are_named(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.jsonl: the file is empty"):
        load_rows(str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "a"}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl: cannot be read as json"):
        load_rows(str(broken))


def test_bad_limit():
    with pytest.raises(ValueError, match="limit"):
        load_rows("x.jsonl", limit=-1)


def test_is_local():
    assert is_local("data/train.jsonl") and is_local("./train") and is_local("/abs/path")
    assert not is_local("openai/gsm8k") and not is_local("gsm8k")


def test_load_examples_validates_every_row(tmp_path):
    path = _write(tmp_path / "test.jsonl", ROWS + [{"question": "What is 1 + 1?", "answer": "two"}])
    task = get_task("math")()
    with pytest.raises(DataError, match=r"test.jsonl: row 3 field 'answer' has no final number"):
        load_examples(task, str(path))
    examples = load_examples(task, str(path), limit=3)
    assert [e.index for e in examples] == [0, 1, 2]
    assert examples[0].question == "What is 2 + 3?" and examples[0].answer.endswith("#### 5")


def test_load_examples_names_missing_field(tmp_path):
    path = _write(tmp_path / "rows.csv", [{"prompt": "a", "answer": "#### 1"}])
    with pytest.raises(DataError, match=r"rows.csv: row 0 has no 'question' field \(fields: \['answer', 'prompt'\]\)"):
        load_examples(get_task("math")(), str(path))
