"""The ``choice`` task: row validation, the prompt, and answers by likelihood on a tiny model."""

from __future__ import annotations

import math

import pytest

from tests.pipeline.tiny_lm import tiny_engine, tiny_tokenizer
from w2s_jax.tasks import DataError, Generation, get_task
from w2s_jax.tasks.choice import ChoiceOptions

ROWS = [{"question": "is the cat big", "options": ["yes", "no"], "label": 0},
        {"question": "what sat on the mat", "options": ["the big red dog", "cat", "a small blue cat"], "label": "cat"},
        {"question": "how was it", "options": ["weak", "strong and big", "red"], "label": "C"},
        {"question": "what ran home", "options": ["he", "the teacher and the student", "she"]}]


def _task(**options):
    return get_task("choice")(ChoiceOptions(**options))


def test_labels_by_index_text_and_letter():
    task = _task()
    examples = [task.example(row, i, "c.jsonl") for i, row in enumerate(ROWS)]
    assert [e.answer for e in examples] == ["yes", "cat", "red", None]
    assert task.prompt(examples[0]).user == "is the cat big\nOptions:\n- yes\n- no"
    assert _task(answer_prefix="Answer:").prompt(examples[0]).user.endswith("- no\nAnswer:")


def test_option_columns_and_float_labels():
    task = _task(options_field=["A", "B", "C"], label_field="answer")
    row = {"question": "q", "A": "red", "B": 7, "C": "blue", "answer": 1.0}  # CSV: ints with gaps read as floats
    example = task.example(row, 0, "c.csv")
    assert example.answer == "7" and task.options_of(row) == ("red", "7", "blue")
    assert task.example({**row, "answer": math.nan}, 1, "c.csv").answer is None


@pytest.mark.parametrize("row, message", [
    ({"options": ["a", "b"], "label": 0}, r"c.jsonl: row 5 has no 'question' field"),
    ({"question": "q", "label": 0}, r"c.jsonl: row 5 has no 'options' field"),
    ({"question": "q", "options": "a, b", "label": 0}, r"row 5 field 'options' must be a list"),
    ({"question": "q", "options": ["a"], "label": 0}, r"row 5 has 1 option\(s\)"),
    ({"question": "q", "options": ["a", " a "], "label": 0}, r"row 5 has repeated options"),
    ({"question": "q", "options": ["a", ""], "label": 0}, r"row 5 field 'options\[1\]' is empty"),
    ({"question": "q", "options": ["a", "b"], "label": 2}, r"row 5 field 'label' = 2 names none of the 2 options"),
    ({"question": "q", "options": ["a", "b"], "label": "c"}, r"field 'label' = 'c' names none"),
    ({"question": "q", "options": ["a", "b"], "label": True}, r"field 'label' = True names none"),
])
def test_bad_rows_are_named(row, message):
    with pytest.raises(DataError, match=message):
        _task().example(row, 5, "c.jsonl")


@pytest.mark.parametrize("kwargs, message", [
    (dict(normalize="mean"), "task.normalize"),
    (dict(options_field=["A"]), "at least two columns"),
    (dict(question_field=""), "task.question_field"),
])
def test_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChoiceOptions(**kwargs)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tiny_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize("normalize", ["char", "token", "sum"])
def test_answer_is_the_argmax_of_engine_score(engine, normalize):
    task = _task(normalize=normalize)
    examples = [task.example(row, i, "c.jsonl") for i, row in enumerate(ROWS)]
    prompts = [task.prompt(e) for e in examples]
    answers = task.answer(engine, prompts, examples, Generation())
    for prompt, row, answer in zip(prompts, ROWS, answers):
        completions = [" " + o for o in row["options"]]
        scores = engine.score([prompt] * len(completions), completions)
        value = {"sum": [s.sum_logprob for s in scores],
                 "token": [s.sum_logprob / len(s.token_ids) for s in scores],
                 "char": [s.sum_logprob / len(c) for s, c in zip(scores, completions)]}[normalize]
        assert answer == row["options"][max(range(len(value)), key=value.__getitem__)]
    if normalize == "sum":  # a near-uniform random model: the fewest tokens win a sum
        assert answers[1] == "cat" and answers[2] in ("weak", "red")
    metrics = task.metric(examples, answers)
    assert [m["accuracy"] for m in metrics][:3] == [float(a == e.answer) for a, e in zip(answers, examples)][:3]
    assert metrics[3] == {"accuracy": None}
