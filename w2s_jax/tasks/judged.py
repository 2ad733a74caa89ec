"""Tasks scored by a judge model against rubrics (``persona``, ``explain``, ``qa`` with a judge).

A judged task names its rubrics, primary first; :meth:`JudgedTask.metric` asks the judge
(:class:`~w2s_jax.tasks.judge.Judge`) for every (item, rubric) in one batched call and returns
``{rubric name: score, ..., "_malformed": malformed judgements of the item}``.

With ``judge.mode = "joint"`` the judge is asked once per item for every rating
(:meth:`JudgedTask.joint_request`, from the task's ``judge_system`` and ``judge_user`` options, the
ratings in the order ``judge_order`` names them); ``_malformed`` is then the samples the vote filter
dropped, and an item whose vote failed has None for every rating.
"""

from __future__ import annotations

from collections.abc import Sequence

from w2s_jax.inference.engine import Prompt
from w2s_jax.tasks.base import Example, Task
from w2s_jax.tasks.fields import optional_text_field, text_field
from w2s_jax.tasks.judge import JointRating


def check_template(template: str, what: str, **values: str) -> None:
    """``template`` must format with exactly the placeholders in ``values`` (or fewer)."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"{what} must be a non-empty string, got {template!r}")
    try:
        template.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        allowed = ", ".join("{" + k + "}" for k in values) or "none"
        raise ValueError(f"{what}: bad placeholder or brace ({error}); allowed placeholders: "
                         f"{allowed} (write {{{{ and }}}} for literal braces)") from None


class JudgedTask(Task):
    """Base of tasks whose metric is a judge's rating; subclasses define :meth:`rubrics`."""

    needs_judge = True
    rubric_names: tuple[str, ...] = ()  # the metric names, primary first

    def rubrics(self, example: Example) -> dict[str, str]:
        """The rubric text of each name in ``rubric_names`` for this example."""
        raise NotImplementedError

    def judged_question(self, example: Example) -> str:
        """The question as the judge is shown it (default: the student's prompt text)."""
        return self.prompt(example).user

    def joint_request(self, example: Example, answer: str, remove: str = "") -> Prompt:
        """The joint judgement request of one answer: ``judge_system`` as system message,
        ``judge_user`` (``{question}``, ``{answer}``) as user turn; ``remove`` is deleted from the
        answer, which is then stripped (the paper's ``GetEvalUserPrompt``)."""
        o = self.options
        shown = answer.replace(remove, "").strip() if remove else answer.strip()
        return Prompt(system=o.judge_system or None,
                      user=o.judge_user.format(question=self.judged_question(example), answer=shown))

    def metric(self, examples: Sequence[Example], predictions: Sequence[str], *,
               judge=None) -> list[dict[str, float | None]]:
        if judge is None:
            raise ValueError(f"task {self.name!r} is scored by a judge model: set models.judge in the "
                             "experiment file")
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        if getattr(getattr(judge, "options", None), "mode", None) == "joint":
            order = tuple(self.options.judge_order)
            requests = [self.joint_request(e, p, judge.options.remove_from_answer)
                        for e, p in zip(examples, predictions)]
            return [joint_row(rating, order, self.rubric_names) for rating in judge.rate_joint(requests, len(order))]
        names = self.rubric_names
        items = []
        for example, prediction in zip(examples, predictions):
            rubrics = self.rubrics(example)
            items += [(rubrics[name], self.judged_question(example), prediction) for name in names]
        ratings = judge.rate_many(items)
        out = []
        for i in range(len(examples)):
            mine = ratings[i * len(names):(i + 1) * len(names)]
            row: dict[str, float | None] = {name: rating.score for name, rating in zip(names, mine)}
            row["_malformed"] = sum(rating.malformed for rating in mine)
            out.append(row)
        return out

    def metric_names(self) -> tuple[str, ...]:
        return self.rubric_names + ("_malformed",)


def joint_row(rating: JointRating, order: Sequence[str], names: Sequence[str]) -> dict[str, float | None]:
    """A joint rating as a metric row: ``names`` first (primary first), None when the vote failed."""
    scores = dict(zip(order, rating.scores)) if rating.scores is not None else {}
    return {**{name: scores.get(name) for name in names}, "_malformed": rating.dropped}


def check_judge_options(options, names: Sequence[str], what: str = "task") -> None:
    """``judge_system``, ``judge_user`` ({question}, {answer}) and ``judge_order`` (a permutation
    of ``names``) of a judged task's options."""
    if options.judge_system is not None:
        check_template(options.judge_system, f"{what}.judge_system")
    check_template(options.judge_user, f"{what}.judge_user", question="", answer="")
    order = options.judge_order
    if not isinstance(order, (tuple, list)) or sorted(order) != sorted(names):
        raise ValueError(f"{what}.judge_order must name each of {list(names)} once (the order the "
                         f"judge_system prompt asks for the ratings), got {order!r}")


# The multiple-choice instruction Somerstep et al. (ICLR 2025) put before each tinyMMLU question
# (CreateQuestionsList in utils.py of UMich-FATML/w2s-refinement).
TINYMMLU_INSTRUCTION = ("Answer the following multiple-choice question with the correct letter (e.g., "
                        "'Answer: A') and then skip one line and give your reasoning (e.g., "
                        "'Reasoning: ...'). ")


def tinymmlu_question(formatted: str) -> str:
    """A tinyMMLU ``input_formatted`` prompt (a header, few-shot examples and the question, separated
    by blank lines) as the paper asked it: the instruction, the header and the question alone."""
    parts = formatted.split("\n\n")
    return f"{TINYMMLU_INSTRUCTION}{parts[0]} {parts[-1]}"


def check_fields(value, what: str) -> None:
    """A row field name, or a list of them (the first one a row has is used)."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what} must be a field name or a non-empty list of them, got {value!r}")


def check_weak_options(options, what: str = "task") -> None:
    """``system`` (None or text), ``weak_template`` ({question}) and ``weak_system_in_user``."""
    if options.system is not None:
        check_template(options.system, f"{what}.system")
    check_template(options.weak_template, f"{what}.weak_template", question="")
    if not isinstance(options.weak_system_in_user, bool):
        raise ValueError(f"{what}.weak_system_in_user must be true or false, got {options.weak_system_in_user!r}")


class WeakSystemTask(JudgedTask):
    """A judged task whose weak supervisor alone gets a system prompt (a persona, a technique):
    rows hold a question field and an optional reference answer (``options.answer_field``), the
    strong model and the student see the question alone. Subclasses name the options fields."""

    question_option: str = "question_field"  # the Options field naming the row's question field
    system_option: str = ""  # the Options field holding the weak model's system prompt

    def example(self, row, index, source):
        o = self.options
        names = getattr(o, self.question_option)
        names = (names,) if isinstance(names, str) else tuple(names)
        name = next((n for n in names if row.get(n) is not None), names[0])  # the first field the row has
        question = text_field(row, name, index, source)
        if name == getattr(o, "tinymmlu_field", None):
            question = tinymmlu_question(question)
        return Example(index=index, question=question,
                       answer=optional_text_field(row, o.answer_field, index, source), fields=row)

    def prompt(self, example):
        return Prompt(user=example.question, system=self.options.system)

    def question_text(self, example):
        return example.question

    def weak_prompt(self, example):
        o = self.options
        user = o.weak_template.format(question=example.question)
        system = getattr(o, self.system_option)
        if o.weak_system_in_user:  # one user turn "system\nuser", for chat templates without a system role
            return Prompt(user=f"{system}\n{user}")
        return Prompt(user=user, system=system)
