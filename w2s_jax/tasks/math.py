"""``math`` (GSM8K) and ``math-boxed`` (MATH): exact match on the final answer.

``math``: rows ``{"question": ..., "answer": "...reasoning...\\n#### 72"}`` (GSM8K's format; the
field names are options). The gold answer's final number is read strictly (``#### x``, a last
``\\boxed{x}``, or an answer that is just a number); a response's final number robustly (the
first ``#### x``, else the last ``\\boxed{}``, else the last ``answer is x``, else the last number
anywhere; see :mod:`w2s_jax.tasks.answers`). Numbers compare exactly as fractions: ``3/4 == 0.75``,
``72.0 == 72``, ``1,000 == 1000``.

``math-boxed``: rows ``{"problem": ..., "solution": "...\\boxed{\\frac{1}{2}}"}`` (MATH's format),
or a one-line bare answer (``"\\frac{1}{2}"``). Answers are LaTeX expressions, compared as
normalised strings (:func:`~w2s_jax.tasks.answers.normalize_math`) and numerically when both
read as numbers. It is a task of its own rather than an option of ``math`` because every default
differs (fields, instruction, extraction).

Both score ``{"accuracy": 0 or 1}`` per item (None for a test row without a gold answer) and
``"_unparsed"``: 1 when the response states no answer at all (a diagnostic: format failures).
The training target of an example is its gold solution as written.

``metric = "judge"`` scores instead as Somerstep et al. (ICLR 2025) did: a judge model reads the
question, the true solution and the response (``judge_system``, ``judge_user``; default: the paper's
prompts, ``reasoning_functions.py`` of UMich-FATML/w2s-refinement) and rates 1 only if both the
answer and the reasoning are right, else 0, sampled ``judge.samples`` times at
``judge.temperature`` and voted as in ``judge.mode = "joint"``
(:func:`~w2s_jax.tasks.judge.vote`): ``accuracy`` is the mean of the kept votes, None when the vote
fails; ``_malformed`` counts the dropped samples. ``weak_template`` (``{question}``) is the weak
model's prompt (None: the student's).
"""

from __future__ import annotations

import dataclasses

from w2s_jax.inference.engine import Prompt
from w2s_jax.tasks.answers import (
    extract_expression,
    extract_number,
    gold_number,
    last_boxed,
    math_equal,
    normalize_math,
    parse_number,
)
from w2s_jax.tasks.base import DataError, Example, Task, register
from w2s_jax.tasks.fields import check_name, optional_text_field, text_field
from w2s_jax.tasks.judged import check_template

GSM8K_INSTRUCTION = ("Solve the problem step by step. On the last line write the final answer as "
                     "#### <number>.")
MATH_INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."
METRICS = ("exact", "judge")
# The math judge of Somerstep et al. (ICLR 2025): GetEvalSystemPrompt and GetEvalUserPrompt in
# reasoning_functions.py of UMich-FATML/w2s-refinement (the leading space is theirs).
PAPER_JUDGE = (
    " You will be given a mathematical question, a true answer to the question, and a response to the "
    "question by an AI assistant. Please act as an impartial grader and evaluate the quality of the "
    "response provided by the AI assistant. Your evaluation should consider two primary factors. The "
    "first is correctness, the AI response should match the true answer provided. The second is "
    "reasoning, the reasoning provided by the AI assistant should match the true answer provided.  If "
    "both the answer and reasoning are correct, please provide a score of 1, if either are incorrect "
    "please provide a score of 0. For each please strictly following this format: \"[[rating]]\", for "
    "example: \"Score: [[1]]\". Please do not include anything in your response except the score.")
PAPER_JUDGE_USER = "Question: {question} \n\n True Answer: {reference} \n\n AI Answer: {answer}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MathOptions:
    question_field: str = "question"  # the row field holding the problem
    answer_field: str = "answer"  # the gold solution ending in "#### <number>" (may be absent: unlabelled)
    instruction: str = GSM8K_INSTRUCTION  # appended to the question on its own line ("" for none)
    weak_template: str | None = None  # the weak model's prompt, {question} (None: the student's prompt)
    metric: str = "exact"  # "exact": the final answer; "judge": a judge rates answer and reasoning 1/0
    judge_system: str | None = PAPER_JUDGE  # metric = "judge": the judge's system message
    judge_user: str = PAPER_JUDGE_USER  # metric = "judge": {question}, {reference} (the gold solution), {answer}

    def __post_init__(self):
        check_name(self.question_field, "task.question_field")
        check_name(self.answer_field, "task.answer_field")
        if not isinstance(self.instruction, str):
            raise ValueError(f"task.instruction must be a string, got {self.instruction!r}")
        if self.weak_template is not None:
            check_template(self.weak_template, "task.weak_template", question="")
        if self.metric not in METRICS:
            raise ValueError(f"task.metric must be one of {METRICS}, got {self.metric!r}")
        if self.judge_system is not None:
            check_template(self.judge_system, "task.judge_system")
        check_template(self.judge_user, "task.judge_user", question="", reference="", answer="")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MathBoxedOptions(MathOptions):
    question_field: str = "problem"
    answer_field: str = "solution"  # a solution with \boxed{answer}, or the bare answer on one line
    instruction: str = MATH_INSTRUCTION


class _FinalAnswerTask(Task):
    """Shared by both: a question, an instruction, a gold solution and exact-match scoring."""

    def __init__(self, options=None):
        super().__init__(options)
        self.needs_judge = self.options.metric == "judge"

    def example(self, row, index, source):
        o = self.options
        question = text_field(row, o.question_field, index, source)
        answer = optional_text_field(row, o.answer_field, index, source)
        if answer is not None:
            self.gold(answer, lambda why: DataError(
                f"{source}: row {index} field {o.answer_field!r} {why}: {answer[-80:]!r}"))
        return Example(index=index, question=question, answer=answer, fields=row)

    def prompt(self, example):
        instruction = self.options.instruction.strip()
        return Prompt(user=f"{example.question}\n{instruction}" if instruction else example.question)

    def weak_prompt(self, example):
        template = self.options.weak_template
        return self.prompt(example) if template is None else Prompt(user=template.format(question=example.question))

    def judge_request(self, example: Example, answer: str, remove: str = "") -> Prompt:
        """The judged metric's request: the question, the true solution and the response (``remove``
        deleted from it, then stripped, as the paper's ``GetEvalUserPrompt`` does)."""
        shown = answer.replace(remove, "").strip() if remove else answer.strip()
        o = self.options
        return Prompt(system=o.judge_system or None,
                      user=o.judge_user.format(question=example.question, reference=example.answer, answer=shown))

    def metric(self, examples, predictions, *, judge=None):
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        if self.options.metric == "judge":
            return self._judged(examples, predictions, judge)
        out = []
        for example, prediction in zip(examples, predictions):
            if example.answer is None:
                out.append({"accuracy": None, "_unparsed": 0})
                continue
            correct, parsed = self.compare(prediction, self.gold(example.answer))
            out.append({"accuracy": float(correct), "_unparsed": int(not parsed)})
        return out

    def _judged(self, examples, predictions, judge):
        if judge is None:
            raise ValueError(f"task {self.name!r} with metric = 'judge' needs a judge model: set models.judge")
        scored = [i for i, e in enumerate(examples) if e.answer is not None]
        remove = judge.options.remove_from_answer
        ratings = judge.rate_joint([self.judge_request(examples[i], predictions[i], remove) for i in scored], 1)
        out = [{"accuracy": None, "_malformed": 0} for _ in examples]
        for i, rating in zip(scored, ratings):
            out[i] = {"accuracy": None if rating.scores is None else rating.scores[0], "_malformed": rating.dropped}
        return out

    def metric_names(self):
        return ("accuracy", "_malformed") if self.options.metric == "judge" else ("accuracy", "_unparsed")

    def gold(self, answer: str, error=None):
        """The gold final answer of a solution; ``error(why)`` builds the exception when absent."""
        raise NotImplementedError

    def compare(self, prediction: str, gold) -> tuple[bool, bool]:
        """(whether the response's final answer equals ``gold``, whether it states one)."""
        raise NotImplementedError


@register
class Math(_FinalAnswerTask):
    """GSM8K-style word problems: exact match on the final number."""

    name = "math"
    Options = MathOptions

    def gold(self, answer, error=None):
        value = gold_number(answer)
        if value is None:
            raise (error or ValueError)("has no final number (expected '#### <number>', "
                                        "'\\boxed{<number>}' or just a number)")
        return value

    def compare(self, prediction, gold):
        value = extract_number(prediction)
        return value is not None and value == gold, value is not None

    def stated_answer(self, text):
        """The final number as graded (``72.0`` and ``72`` agree), else the text."""
        value = extract_number(text)
        return f"number {value}" if value is not None else super().stated_answer(text)


@register
class MathBoxed(_FinalAnswerTask):
    """MATH-style problems: the \\boxed{} answer, compared as normalised LaTeX or numerically."""

    name = "math-boxed"
    Options = MathBoxedOptions

    def gold(self, answer, error=None):
        boxed = last_boxed(answer)
        if boxed is not None and boxed.strip():
            return boxed
        if boxed is None and "\n" not in answer.strip():
            return answer.strip()  # a bare one-line answer
        raise (error or ValueError)("has no final answer (expected a solution with \\boxed{...} "
                                    "or the bare answer on one line)")

    def compare(self, prediction, gold):
        expression = extract_expression(prediction)
        return math_equal(expression, gold), expression is not None

    def stated_answer(self, text):
        """The final expression as graded: normalised LaTeX, or its value when it reads as a
        number (``0.5`` and ``\\frac{1}{2}`` agree); else the text."""
        expression = extract_expression(text)
        if expression is None:
            return super().stated_answer(text)
        normal = normalize_math(expression)
        value = parse_number(normal)
        return f"number {value}" if value is not None else f"expression {normal}"
