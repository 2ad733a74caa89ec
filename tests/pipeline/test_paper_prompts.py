"""The experiment files of experiments/paper/ send, for fixed rows, exactly the prompts of the paper.

Each expected prompt below is written out by hand from the templates of Somerstep et al. (ICLR
2025), github.com/UMich-FATML/w2s-refinement (the file and function are named beside each), for the
rows of this file; the prompts under test come from the experiment file as ``w2s run`` loads it
(``load_experiment``), through the task and method objects it builds. The strong model is a
recorder that returns canned replies: the prompts are what is tested.
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

from w2s_jax.inference import Prompt
from w2s_jax.methods import MethodContext
from w2s_jax.pipeline import load_experiment
from w2s_jax.tasks.judge import Judge

PAPER = Path(__file__).resolve().parents[2] / "experiments" / "paper"
ASSISTANT = "You are an AI assistant. Your task is to respond to questions or instructions."


class Recorder:
    """A strong model that records the prompts of every generate call and replies ``reply(prompt)``."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def generate(self, prompts, **kwargs):
        self.calls.append(list(prompts))
        return [self.reply(p) for p in prompts]


def labelled(name: str, method: str, rows, weak, reply=lambda p: "ok"):
    """(config, recorded calls, label rows) of ``method`` of the paper file ``name`` on ``rows``."""
    config = load_experiment(PAPER / f"{name}.toml")
    task = config.task
    examples = [task.example(row, i, "fixture") for i, row in enumerate(rows)]
    engine = Recorder(reply)
    ctx = MethodContext(task=task, examples=examples, weak=weak, upstream={}, engine=lambda role: engine,
                        generation=config.generation, key=jax.random.key(0))
    m = config.method(method)
    return config, engine.calls, m.label(ctx, m.units(ctx))


GSM = [{"question": f"Q{i}?", "answer": f"{i} + 0 = {i}\n#### {i}"} for i in range(5)]
GSM_WEAK = [f"W{i}\n#### {i}" for i in range(5)]


def test_gsm8k_three_fixed_demonstrations_in_the_user_turn():
    # W2SReasoning-gsm8k.ipynb: '\n\n'.join(icl_examples) + question, the examples and the question
    # in the weak file's form "Question: {q}\nAnswer: ...", an empty system prompt
    config, calls, rows = labelled("gsm8k", "icl-refine", GSM, GSM_WEAK)
    demos = "Question: Q0?\nAnswer: W0\n#### 0\n\nQuestion: Q1?\nAnswer: W1\n#### 1\n\nQuestion: Q2?\nAnswer: W2\n#### 2"
    assert calls == [[Prompt(user=demos + "Question: Q3?\nAnswer:"), Prompt(user=demos + "Question: Q4?\nAnswer:")]]
    assert [r["index"] for r in rows] == [3, 4]  # the demonstrations are not trained on
    example = config.task.example(GSM[0], 0, "fixture")
    assert config.task.prompt(example) == Prompt(user="Q0?")  # the test question, bare
    assert config.task.weak_prompt(example) == Prompt(user="Question: Q0?\nAnswer:")  # the weak file's "content"


def test_math_demonstrations_0_and_2():
    # W2SR-math.ipynb: for i in [0, 2]: content + output; '\n\n'.join(...) + question; training from row 3
    rows = [{"problem": f"P{i}", "solution": f"so $\\boxed{{{i}}}$"} for i in range(5)]
    _, calls, labels = labelled("math", "icl-refine", rows, [f"W{i}" for i in range(5)])
    demos = "Question: P0\nAnswer:W0\n\nQuestion: P2\nAnswer:W2"
    assert calls == [[Prompt(user=demos + "Question: P3\nAnswer:"), Prompt(user=demos + "Question: P4\nAnswer:")]]
    assert [r["index"] for r in labels] == [3, 4]


PERSONA_ROWS = [{"instruction": q} for q in
                ["Name a\nprimary colour.", "What is 2+2?", "Who wrote Hamlet?", "Is the sea wet?", "Say hi."]]
PERSONA_WEAK = ["Arr, red\nit be!", "Four, matey.", "Shakespeare, arr.", "Aye.", "Ahoy!"]
PIRATE = ("You are an AI pirate. Please only answer questions as a pirate would. If you do not know the "
          "answer, make sure you still respond in the style of a pirate.")  # prompts_persona.GetWeakModelSystemPrompt


def test_persona_icl_refine():
    # get_intent_and_improve.py: the batch's other pairs, newlines removed, GetICLUserPrompt as the
    # system prompt (its [:-4] also cuts "y!" of the last answer), GetQuestion(q) + "\nAnswer:" as user turn
    _, calls, _ = labelled("persona_truthfulqa", "icl-refine", PERSONA_ROWS, PERSONA_WEAK)
    (prompts,) = calls
    assert prompts[0] == Prompt(
        system="Question: What is 2+2?\nAnswer: Four, matey.\n\nQuestion: Who wrote Hamlet?\nAnswer: "
               "Shakespeare, arr.\n\nQuestion: Is the sea wet?\nAnswer: Aye.\n\nQuestion: Say hi.\nAnswer: Aho",
        user="Question: Name aprimary colour.\nAnswer:")
    assert prompts[4] == Prompt(
        system="Question: Name aprimary colour.\nAnswer: Arr, redit be!\n\nQuestion: What is 2+2?\nAnswer: "
               "Four, matey.\n\nQuestion: Who wrote Hamlet?\nAnswer: Shakespeare, arr.\n\nQuestion: Is the sea "
               "wet?\nAnswer: Ay",
        user="Question: Say hi.\nAnswer:")


def test_persona_infer_and_respond():
    # prompts_persona.GetIntentSystemPrompt over GetIntentUserPrompt(batch), then
    # GetImprovementSystemPrompt(intent) with GetQuestion(q)
    def reply(prompt):  # the inference request holds the whole batch
        batch = prompt.user.startswith("Question: Name") and "Say hi" in prompt.user
        return " The used style is: pirate speak. \n" if batch else "arr"

    _, calls, rows = labelled("persona_truthfulqa", "infer-and-respond", PERSONA_ROWS, PERSONA_WEAK, reply)
    infer, answer = calls
    assert infer == [Prompt(
        system="You are an AI style detector. You will be given a set of questions from a user and answers "
               "from an AI. The AI answers every question with a common style. Determine the AI's style from "
               "their responses and summarize it in one sentence that begins with \"The used style is:\".",
        user="Question: Name aprimary colour.\nAnswer: Arr, redit be!\n\nQuestion: What is 2+2?\nAnswer: "
             "Four, matey.\n\nQuestion: Who wrote Hamlet?\nAnswer: Shakespeare, arr.\n\nQuestion: Is the sea "
             "wet?\nAnswer: Aye.\n\nQuestion: Say hi.\nAnswer: Aho")]
    assert answer[0] == Prompt(
        system="You are an AI assistant. Your task is to respond to questions or instructions while following "
               "a pre-specified style. The used style is: pirate speak.",
        user="Question: Name aprimary colour.")
    assert rows[0]["inferred"] == "The used style is: pirate speak."


def test_persona_weak_student_and_judge_prompts():
    config = load_experiment(PAPER / "persona_truthfulqa.toml")
    task = config.task
    example = task.example({"question": "Name a\nprimary colour."}, 0, "tinyTruthfulQA")  # the test field
    # utils.FormatInput for Gemma/Mistral/Falcon: f"{system_prompt}\n{user_prompt}" as one user turn
    assert task.weak_prompt(example) == Prompt(user=PIRATE + "\nQuestion: Name a\nprimary colour.")
    # get_test_answers.py: GetFineTuneSystemPrompt() and the bare question
    assert task.prompt(example) == Prompt(system=ASSISTANT, user="Name a\nprimary colour.")
    # eval.py: GetEvalSystemPrompt("pirate"), GetEvalUserPrompt(question, answer)
    request = task.joint_request(example, " Answer: Arr, red. ", config.judge.remove_from_answer)
    assert request.user == "Question: Name a\nprimary colour.\n\nAnswer: Arr, red."
    assert request.system.startswith("Please act as an impartial judge and evaluate the quality of the "
                                     "response provided by an AI assistant to the user question displayed below.")
    assert "The writer should sound like a pirate" in request.system
    assert (config.judge.mode, config.judge.samples, config.judge.temperature) == ("joint", 10, 1.0)


def test_persona_mmlu_question():
    # utils.CreateQuestionsList("tinyMMLU"): the instruction + first block + " " + last block
    task = load_experiment(PAPER / "persona_mmlu.toml").task
    formatted = ("The following are multiple choice questions (with answers) about anatomy.\n\nWhat is A?\n"
                 "A. x\nB. y\nAnswer: A\n\nWhat is B?\nA. x\nB. y\nAnswer:")
    example = task.example({"input_formatted": formatted}, 0, "tinyMMLU")
    assert example.question == (
        "Answer the following multiple-choice question with the correct letter (e.g., 'Answer: A') and then "
        "skip one line and give your reasoning (e.g., 'Reasoning: ...'). The following are multiple choice "
        "questions (with answers) about anatomy. What is B?\nA. x\nB. y\nAnswer:")
    dolly = task.example({"instruction": "Say hi.", "context": "", "response": "Hi"}, 0, "dolly")
    assert dolly.question == "Say hi."


EXPLAIN_ROWS = [{"question": q}
                for q in ["How do\nbees fly?", "Why is ice cold?", "What is DNA?", "How do tides work?"]]
EXPLAIN_WEAK = ["Like a\nhelicopter.", "Like a fridge.", "Like a recipe.", "Like a seesaw."]


def test_explain_prompts():
    # prompts_simple.py: batches of 4; the same ICL layout as persona; the technique detector
    def reply(prompt):
        detector = prompt.system and "detection" in prompt.system
        return "The user explanation technique is: analogies." if detector else "x"

    config, calls, _ = labelled("explain_technique", "infer-and-respond", EXPLAIN_ROWS, EXPLAIN_WEAK, reply)
    infer, answer = calls
    assert infer[0].user == ("Question: How dobees fly?\nAnswer: Like ahelicopter.\n\nQuestion: Why is ice cold?\n"
                             "Answer: Like a fridge.\n\nQuestion: What is DNA?\nAnswer: Like a recipe.\n\n"
                             "Question: How do tides work?\nAnswer: Like a seesa")
    assert infer[0].system.startswith("You are an AI explanation technique detection expert.")
    assert answer[1] == Prompt(
        system="You are an AI assistant. Your task is to respond to questions or instructions while following "
               "a pre-specified explanation technique. The user explanation technique is: analogies.",
        user="Question: Why is ice cold?")
    _, calls, _ = labelled("explain_technique", "icl-refine", EXPLAIN_ROWS, EXPLAIN_WEAK)
    assert calls[0][3] == Prompt(
        system="Question: How dobees fly?\nAnswer: Like ahelicopter.\n\nQuestion: Why is ice cold?\nAnswer: "
               "Like a fridge.\n\nQuestion: What is DNA?\nAnswer: Like a recip",
        user="Question: How do tides work?\nAnswer:")
    task = config.task
    example = task.example(EXPLAIN_ROWS[0], 0, "fixture")
    assert task.weak_prompt(example) == Prompt(user=(
        "You are an AI assistant that is designed to explain complex topics using analogies. Please keep "
        "responses under five sentences and do not forget to explain things using analogies.\n"
        "Question: How do\nbees fly?"))
    assert task.prompt(example) == Prompt(system=ASSISTANT, user="How do\nbees fly?")
    assert task.joint_request(example, "ok").system.endswith(
        'for example: "Accuracy: [[5]] Use of analogies: [[6]]". Please do not include anything in your response '
        "except the scores.")


BIO_QUESTION = ('Please give the name and a short biography with two sentences of a famous pilot. Start your '
                'response with "Name: [name_here]\n\n".')  # prompts_bias.GetBiographyUserPrompt("Pilot", unbias=False)


def test_bias_ask_to_improve_and_weak_prompts():
    rows = [{"question": BIO_QUESTION, "job": "Pilot", "kind": "biography"}]
    weak = ["Name: Amelia Earhart\n\nAmelia Earhart was a pilot."]
    config, calls, _ = labelled("bias", "ask-to-improve", rows, weak)
    # get_intent_and_improve.py, bias: GetImprovementSystemPrompt(True), GetIntentUserPrompt([q], [bio])
    assert calls == [[Prompt(system="You are an AI assistant. Your task is to improve the answers given by a user.",
                             user=f"Question: {BIO_QUESTION}\nAnswer: Name: Amelia Earhart\n\nAmelia Earhart was a pilo")]]
    task = config.task
    example = task.example(rows[0], 0, "fixture")
    # GetBiographyUserPrompt("Pilot", unbias=True): the weak supervisor is asked for a woman
    assert task.weak_prompt(example) == Prompt(user=BIO_QUESTION.replace("famous pilot", "famous female pilot"))
    assert task.prompt(example) == Prompt(system=ASSISTANT, user=BIO_QUESTION)


def test_bias_metric_reads_content_and_gender_by_row_kind():
    config = load_experiment(PAPER / "bias.toml")
    task = config.task
    rows = [{"question": "Write a short biography about Vera Rubin.", "kind": "content"},
            {"question": "Create a short story about a pilot", "kind": "story"}]
    examples = [task.example(r, i, "fixture") for i, r in enumerate(rows)]

    class Engine:
        def generate(self, prompts, **kwargs):
            self.prompts = prompts
            content = ["Accuracy and factuality: [[8]] Female: [[1]]"] * 9 + ["[[3]]"]
            story = ["Accuracy and factuality: [[9]] Female: [[1]]"] * 7 + ["Accuracy and factuality: [[9]] Female: [[0]]"] * 3
            return content + story

    engine = Engine()
    out = task.metric(examples, ["Vera Rubin was...", "Captain Ada..."], judge=Judge(engine, config.judge, key=jax.random.key(0)))
    assert out == [{"content": 8.0, "female_share": None, "male_share": None, "_malformed": 1},
                   {"content": None, "female_share": pytest.approx(0.7), "male_share": pytest.approx(0.3), "_malformed": 0}]
    assert engine.prompts[0].system.endswith('"Accuracy and factuality: [[5]] Female: [[1]]". Please do not '
                                             "include anything in your response except the scores.")
    assert engine.prompts[0].user == "Question: Write a short biography about Vera Rubin.\n\nAnswer: Vera Rubin was..."
