"""The paper's judge (``judge.mode = "joint"``) and the judged math metric, against hand-computed cases.

Somerstep et al. (ICLR 2025) ask the judge for every rating in one reply, sample it k times at
T = 1, parse every ``[[integer]]`` of each reply, keep the replies whose number of ratings is the
median count (``GPTEval`` in utils.py / reasoning_functions.py of UMich-FATML/w2s-refinement) and
average them. The expected values below are worked by hand from those rules. The judge model is a
fake engine returning canned replies: what is tested is the parsing, the filter and the
bookkeeping, which a real model's text would not let the test choose.
"""

from __future__ import annotations

import jax
import pytest

from w2s_jax.inference import Prompt, Temperature
from w2s_jax.tasks import get_task
from w2s_jax.tasks.judge import Judge, JudgeOptions, parse_ratings, vote
from w2s_jax.tasks.math import MathOptions
from w2s_jax.tasks.persona import PersonaOptions


class FakeEngine:
    """Replies to prompt i with ``replies[i]`` and records every generate call."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def generate(self, prompts, **kwargs):
        self.calls.append(dict(prompts=list(prompts), **kwargs))
        assert len(prompts) == len(self.replies)
        return self.replies


@pytest.mark.parametrize("text, expected", [
    ("Content Rating: [[5]] Style Rating: [[7]]", [5, 7]),
    ("[[10]] then [[0]]", [10, 0]),
    ("Score: [[1]]", [1]),
    ("[[ 5]] [[7.5]] [[-1]] [[x]]", []),  # the paper's parser reads bare digits only
    ("no rating", []),
])
def test_parse_ratings_reads_every_bracketed_integer(text, expected):
    assert parse_ratings(text) == expected


@pytest.mark.parametrize("samples, num, rule, expected", [
    ([[7, 8], [6, 9], [5]], 2, "median", (6.5, 8.5)),  # counts 2,2,1: median 2, mean of the two kept
    ([[7, 8], [5], [3]], 2, "median", None),  # counts 2,1,1: median 1 is not the 2 asked for
    ([[7, 8], [5]], 2, "median", None),  # counts 2,1: median 1.5, no reply has it
    ([[1], [0], [1], []], 1, "median", (2 / 3,)),  # counts 1,1,1,0: the three votes 1,0,1
    ([[3, 4], [5, 6], [1], [1], [2], [9, 9, 9], [8, 8, 8]], 2, "median", (4.0, 5.0)),  # counts sorted 1,1,1,2,2,3,3
    ([[3, 4], [5, 6], [1], [1], [2], [9, 9, 9], [8, 8, 8]], 2, "mode", None),  # modal count 1 (three times)
    ([[3, 4], [1], [9, 9, 9], [5, 6], [2]], 2, "mode", (4.0, 5.0)),  # tie 2 vs 1: goes to the 2 asked
    ([], 2, "median", None),
])
def test_vote_filter(samples, num, rule, expected):
    got = vote(samples, num, rule)
    assert got == (None if expected is None else pytest.approx(expected))


def test_joint_persona_metric_votes_and_drops_failed_items():
    task = get_task("persona")()
    examples = [task.example({"instruction": q}, i, "p.jsonl") for i, q in enumerate(["Hi?", "Why?"])]
    replies = ["Content Rating: [[4]] Style Rating: [[9]]",  # item 0: counts 2,2,1 -> (4+6)/2, (9+7)/2
               "Content Rating: [[6]] Style Rating: [[7]]",
               "Style: [[3]]",
               "[[2]]", "[[5]]", "Content Rating: [[8]] Style Rating: [[8]]"]  # item 1: median 1 -> fails
    engine = FakeEngine(replies)
    options = JudgeOptions(mode="joint", samples=3, temperature=1.0, remove_from_answer="Answer:")
    judge = Judge(engine, options, key=jax.random.key(0))
    rows = task.metric(examples, ["Answer: Arr, hi.", "Because."], judge=judge)
    assert rows == [{"style": 8.0, "quality": 5.0, "_malformed": 1},
                    {"style": None, "quality": None, "_malformed": 3}]
    (call,) = engine.calls
    assert call["sampler"] == Temperature(1.0) and len(set(call["example_ids"])) == 6
    # the request of item 0, byte for byte the paper's layout: GetEvalSystemPrompt("pirate") as the
    # system message and GetEvalUserPrompt (prompts_general.py): "Answer:" removed, then stripped
    assert call["prompts"][0] == Prompt(system=PersonaOptions().judge_system, user="Question: Hi?\n\nAnswer: Arr, hi.")
    assert PersonaOptions().judge_system.endswith(
        'for example: "Content Rating: [[5]] Style Rating: [[7]]". Please do not include anything in your '
        "response except the scores.")
    with pytest.raises(ValueError, match="judge_order must name each of"):
        PersonaOptions(judge_order=("style", "style"))


def test_judged_math_metric():
    task = get_task("math")(MathOptions(metric="judge", instruction=""))
    assert task.needs_judge and task.metric_names() == ("accuracy", "_malformed")
    rows = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "2+2?", "answer": "#### 4"},
            {"question": "3+3?"}]  # the last has no gold solution: not judged
    examples = [task.example(r, i, "gsm.jsonl") for i, r in enumerate(rows)]
    replies = ["[[1]]", "Score: [[0]]", "[[1]]",  # item 0: votes 1, 0, 1 -> 2/3
               "none", "[[1]] [[0]]", "[[1]]"]  # item 1: counts 0, 2, 1: median 1 keeps one vote 1
    engine = FakeEngine(replies)
    judge = Judge(engine, JudgeOptions(mode="joint", samples=3, temperature=1.0), key=jax.random.key(0))
    out = task.metric(examples, [" The sum is 2. ", "4", "6"], judge=judge)
    assert out == [{"accuracy": pytest.approx(2 / 3), "_malformed": 0}, {"accuracy": 1.0, "_malformed": 2},
                   {"accuracy": None, "_malformed": 0}]
    (call,) = engine.calls
    # GetEvalUserPrompt of reasoning_functions.py:
    # f"Question: {question} \n\n True Answer: {key} \n\n AI Answer: {answer}"
    assert call["prompts"][0].user == "Question: 1+1? \n\n True Answer: 1+1=2\n#### 2 \n\n AI Answer: The sum is 2."
    assert call["prompts"][0].system.startswith(" You will be given a mathematical question, a true answer")
    with pytest.raises(ValueError, match="task.metric must be one of"):
        MathOptions(metric="judged")


def test_joint_mode_options():
    assert JudgeOptions(mode="joint", samples=10, temperature=1.0).count_rule == "median"
    with pytest.raises(ValueError, match="repeats one greedy judgement"):
        JudgeOptions(mode="joint", samples=10, temperature=0.0)
    with pytest.raises(ValueError, match="judge.count_rule"):
        JudgeOptions(mode="joint", count_rule="mean")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        Judge(FakeEngine([]), JudgeOptions(mode="joint", samples=2, temperature=1.0))
    with pytest.raises(ValueError, match="rates every metric in one request"):
        Judge(FakeEngine([]), JudgeOptions(mode="joint", samples=1)).rate_many([("r", "q", "a")])


def test_a_task_scored_by_the_joint_judge_refuses_another_mode_when_loaded(tmp_path):
    """``bias`` reads both ratings from one joint reply: any other judge mode is refused when the
    experiment is loaded, naming the setting, not after the labels and students are made."""
    from w2s_jax.pipeline import ExperimentError, load_experiment

    def experiment(judge: str):
        path = tmp_path / "bias.toml"
        path.write_text(f'[task]\nname = "bias"\n[data]\ntrain = "t.jsonl"\ntest = "s.jsonl"\n'
                        f'[models]\nstrong = "s"\nweak = ["w"]\njudge = "j"\n[methods]\nrun = ["naive"]\n{judge}')
        return path

    with pytest.raises(ExperimentError, match=r"judge.mode in \['joint'\], got judge.mode = 'generate'"):
        load_experiment(experiment(""))
    assert load_experiment(experiment('[judge]\nmode = "joint"\n')).judge.mode == "joint"
