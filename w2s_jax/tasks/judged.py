"""Tasks scored by a judge model against rubrics (``persona``, ``explain``, ``qa`` with a judge).

A judged task names its rubrics, primary first; :meth:`JudgedTask.metric` asks the judge
(:class:`~w2s_jax.tasks.judge.Judge`) for every (item, rubric) in one batched call and returns
``{rubric name: score, ..., "_malformed": malformed judgements of the item}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from w2s_jax.inference.engine import Prompt
from w2s_jax.tasks.base import Example, Task
from w2s_jax.tasks.fields import optional_text_field, text_field


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

    def metric(self, examples: Sequence[Example], predictions: Sequence[str], *,
               judge=None) -> list[dict[str, float | None]]:
        if judge is None:
            raise ValueError(f"task {self.name!r} is scored by a judge model: set models.judge in the "
                             "experiment file")
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
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


class WeakSystemTask(JudgedTask):
    """A judged task whose weak supervisor alone gets a system prompt (a persona, a technique):
    rows hold a question field and an optional reference answer (``options.answer_field``), the
    strong model and the student see the question alone. Subclasses name the options fields."""

    question_option: str = "question_field"  # the Options field naming the row's question field
    system_option: str = ""  # the Options field holding the weak model's system prompt

    def example(self, row, index, source):
        o = self.options
        return Example(index=index, question=text_field(row, getattr(o, self.question_option), index, source),
                       answer=optional_text_field(row, o.answer_field, index, source), fields=row)

    def prompt(self, example):
        return Prompt(user=example.question)

    def weak_prompt(self, example):
        return Prompt(user=example.question, system=getattr(self.options, self.system_option))
