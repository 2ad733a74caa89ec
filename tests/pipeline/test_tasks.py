"""The math, math-boxed, persona, explain and qa tasks: row validation, prompts and metrics."""

from __future__ import annotations

import pytest

from w2s_jax.inference import Prompt
from w2s_jax.tasks import DataError, all_tasks, get_task
from w2s_jax.tasks.explain import ExplainOptions
from w2s_jax.tasks.judge import Rating
from w2s_jax.tasks.math import MathBoxedOptions, MathOptions
from w2s_jax.tasks.persona import PIRATE, PersonaOptions
from w2s_jax.tasks.qa import QAOptions, template_fields


def test_registry():
    assert {"math", "math-boxed", "persona", "explain", "choice", "qa"} <= set(all_tasks())


# --- math ----------------------------------------------------------------------------------------

GSM = {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
       "answer": "In May she sold 48/2 = 24.\nIn total 48 + 24 = 72.\n#### 72"}


def test_math_example_and_prompt():
    task = get_task("math")()
    example = task.example(GSM, 0, "gsm.jsonl")
    assert example.answer == GSM["answer"]
    assert task.prompt(example).user == GSM["question"] + "\n" + MathOptions().instruction
    assert task.weak_prompt(example) == task.prompt(example)
    bare = get_task("math")(MathOptions(instruction=""))
    assert bare.prompt(example) == Prompt(user=GSM["question"])


def test_math_custom_fields_and_numeric_answers():
    task = get_task("math")(MathOptions(question_field="q", answer_field="a"))
    example = task.example({"q": "2+2?", "a": 4}, 3, "m.csv")  # a CSV column of numbers
    assert example.answer == "4" and example.index == 3
    assert task.metric([example], ["It is 4."]) == [{"accuracy": 1.0, "_unparsed": 0}]


@pytest.mark.parametrize("row, message", [
    ({"answer": "#### 1"}, r"gsm.jsonl: row 7 has no 'question' field \(fields: \['answer'\]\)"),
    ({"question": "  ", "answer": "#### 1"}, r"gsm.jsonl: row 7 field 'question' is empty"),
    ({"question": ["q"], "answer": "#### 1"}, r"gsm.jsonl: row 7 field 'question' must be text, got list"),
    ({"question": "q", "answer": "She has 5 apples"}, r"gsm.jsonl: row 7 field 'answer' has no final number"),
    ({"question": "q", "answer": "#### five"}, r"row 7 field 'answer' has no final number"),
])
def test_math_bad_rows_are_named(row, message):
    with pytest.raises(DataError, match=message):
        get_task("math")().example(row, 7, "gsm.jsonl")


def test_math_unlabelled_row():
    task = get_task("math")()
    example = task.example({"question": "q"}, 0, "train.jsonl")
    assert example.answer is None
    assert task.metric([example], ["#### 3"]) == [{"accuracy": None, "_unparsed": 0}]


def test_math_metric():
    task = get_task("math")()
    example = task.example(GSM, 0, "gsm.jsonl")
    predictions = ["48 + 24 = 72 clips.\n#### 72", "#### 72.00", "The answer is $72.", "\\boxed{72}",
                   "#### 71", "48/2 = 24, so 48 + 24 = 72 and then 3", "I do not know."]
    rows = task.metric([example] * len(predictions), predictions)
    assert [r["accuracy"] for r in rows] == [1, 1, 1, 1, 0, 0, 0]
    assert [r["_unparsed"] for r in rows] == [0, 0, 0, 0, 0, 0, 1]
    assert task.metric_names() == ("accuracy", "_unparsed")
    with pytest.raises(ValueError, match="1 examples but 2 predictions"):
        task.metric([example], ["a", "b"])


def test_math_boxed():
    task = get_task("math-boxed")()
    solution = "We get $x = \\frac{1}{2}$, so the answer is $\\boxed{\\frac{1}{2}}$."
    example = task.example({"problem": "Solve 2x = 1.", "solution": solution}, 0, "math.jsonl")
    assert "\\boxed{}" in task.prompt(example).user
    predictions = ["so \\boxed{0.5}", "\\boxed{\\dfrac12}", "the answer is 1/2", "\\boxed{\\frac{1}{3}}", "hmm"]
    rows = task.metric([example] * len(predictions), predictions)
    assert [r["accuracy"] for r in rows] == [1, 1, 1, 0, 0]
    assert [r["_unparsed"] for r in rows] == [0, 0, 0, 0, 1]
    bare = task.example({"problem": "p", "solution": "\\sqrt{2}"}, 1, "math.jsonl")  # a bare answer
    assert task.metric([bare], ["\\boxed{\\sqrt2}"])[0]["accuracy"] == 1
    with pytest.raises(DataError, match=r"math.jsonl: row 2 field 'solution' has no final answer"):
        task.example({"problem": "p", "solution": "line one\nline two"}, 2, "math.jsonl")
    with pytest.raises(DataError, match=r"row 3 field 'solution' has no final answer"):
        task.example({"problem": "p", "solution": "\\boxed{}"}, 3, "math.jsonl")
    assert MathBoxedOptions().question_field == "problem"


# --- judged tasks ----------------------------------------------------------------------------------


class ConstantJudge:
    def __init__(self, score=5.0):
        self.items, self.score = [], score

    def rate_many(self, items):
        self.items += items
        return [Rating(score=self.score, samples=[self.score], malformed=0) for _ in items]


def test_persona_prompts_and_rubrics():
    task = get_task("persona")()
    example = task.example({"instruction": "How do magnets work?"}, 0, "p.jsonl")
    assert task.prompt(example) == Prompt(user="How do magnets work?")
    assert task.weak_prompt(example) == Prompt(user="How do magnets work?", system=PIRATE)
    assert example.answer is None and task.needs_judge
    judge = ConstantJudge()
    assert task.metric([example], ["Arr!"], judge=judge) == [{"style": 5.0, "quality": 5.0, "_malformed": 0}]
    style, quality = (rubric for rubric, _, _ in judge.items)
    assert PIRATE in style and "persona" not in quality
    custom = get_task("persona")(PersonaOptions(persona="You are a poet.", instruction_field="prompt",
                                                style_rubric="Rate the poetry. Persona: {persona}"))
    assert custom.rubrics(example)["style"] == "Rate the poetry. Persona: You are a poet."
    with pytest.raises(DataError, match=r"p.jsonl: row 4 has no 'prompt' field"):
        custom.example({"instruction": "x"}, 4, "p.jsonl")


@pytest.mark.parametrize("kwargs, message", [
    (dict(style_rubric="Rate {style}"), r"task.style_rubric: bad placeholder.*allowed placeholders: \{persona\}"),
    (dict(quality_rubric="Rate {"), "task.quality_rubric"),
    (dict(persona=" "), "task.persona"),
    (dict(instruction_field=""), "task.instruction_field"),
])
def test_persona_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PersonaOptions(**kwargs)


def test_explain_prompts_and_reference():
    task = get_task("explain")()
    with_gold = task.example({"question": "Why is the sky blue?", "answer": "Rayleigh scattering."}, 0, "e.jsonl")
    without = task.example({"question": "What is inertia?"}, 1, "e.jsonl")
    assert task.weak_prompt(with_gold).system == ExplainOptions().technique
    assert task.prompt(with_gold).system is None
    assert "Rayleigh scattering." in task.rubrics(with_gold)["accuracy"]
    assert "reference" not in task.rubrics(without)["accuracy"]
    assert ExplainOptions().technique in task.rubrics(without)["technique"]
    rows = task.metric([with_gold, without], ["a", "b"], judge=ConstantJudge(7.0))
    assert rows == [{"technique": 7.0, "accuracy": 7.0, "_malformed": 0}] * 2
    assert task.metric_names() == ("technique", "accuracy", "_malformed")


# --- qa ------------------------------------------------------------------------------------------


def test_qa_template_is_checked():
    assert template_fields("Q: {question} (in {language}) {question} {{x}}") == ("question", "language")
    for template, message in [("no placeholder", "has no {field}"), ("{0}", "plain field name"),
                              ("{}", "plain field name"), ("{a.b}", "plain field name"),
                              ("{a[0]}", "plain field name"), ("{a!r}", "format spec"),
                              ("{a:>5}", "format spec"), ("{a", "literal braces")]:
        with pytest.raises(ValueError, match=message):
            QAOptions(template=template)


def test_qa_every_placeholder_is_a_field_of_every_row():
    task = get_task("qa")(QAOptions(template="Translate to French: {sentence} ({level})", answer_field="french"))
    example = task.example({"sentence": "the cat", "level": 2, "french": "le chat"}, 0, "t.csv")
    assert example.question == "Translate to French: the cat (2)" and example.answer == "le chat"
    with pytest.raises(DataError, match=r"t.csv: row 4 has no 'level' field, which task.template uses"):
        task.example({"sentence": "the cat", "french": "le chat"}, 4, "t.csv")
    with pytest.raises(DataError, match=r"t.csv: row 5 field 'sentence' is empty"):
        task.example({"sentence": "", "level": 1}, 5, "t.csv")


@pytest.mark.parametrize("metric, prediction, gold, expected", [
    ("exact", "The Paris.", "paris", 1.0),
    ("exact", "Paris, France", "paris", 0.0),
    ("contains", "It is Paris, France.", "paris", 1.0),
    ("contains", "Parisian food", "paris", 0.0),  # whole words only
    ("number", "so #### 1,000", "1000", 1.0),
    ("number", "about 3/4", "0.75", 1.0),
    ("number", "no idea", "5", 0.0),
])
def test_qa_metrics(metric, prediction, gold, expected):
    task = get_task("qa")(QAOptions(metric=metric))
    example = task.example({"question": "q", "answer": gold}, 0, "x.jsonl")
    assert task.metric([example], [prediction]) == [{metric: expected}]
    assert task.metric_names() == (metric,) and not task.needs_judge


def test_qa_number_needs_numeric_gold():
    task = get_task("qa")(QAOptions(metric="number"))
    with pytest.raises(DataError, match=r"x.jsonl: row 2 field 'answer' holds no number"):
        task.example({"question": "q", "answer": "blue"}, 2, "x.jsonl")


def test_qa_judge_and_weak_system():
    task = get_task("qa")(QAOptions(metric="judge", rubric="Rate the correctness.", weak_system="Be terse."))
    assert task.needs_judge and task.metric_names() == ("judge", "_malformed")
    example = task.example({"question": "2+2?", "answer": "4"}, 0, "x.jsonl")
    assert task.weak_prompt(example) == Prompt(user="2+2?", system="Be terse.")
    assert task.prompt(example) == Prompt(user="2+2?")
    judge = ConstantJudge(8.0)
    assert task.metric([example], ["four"], judge=judge) == [{"judge": 8.0, "_malformed": 0}]
    assert judge.items == [("Rate the correctness.\nA reference answer: 4", "2+2?", "four")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(metric="judge"), "needs task.rubric"),
    (dict(metric="exact", rubric="x"), "only used with metric"),
    (dict(metric="bleu"), "task.metric must be one of"),
    (dict(answer_field=""), "compares with gold answers"),
    (dict(weak_system=""), "task.weak_system"),
])
def test_qa_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QAOptions(**kwargs)
