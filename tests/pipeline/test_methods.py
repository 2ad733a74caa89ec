"""The label methods send exactly the prompts their algorithms prescribe and return the right rows.

Most tests drive a method with a recording engine: an :class:`Engine` without a model whose
``generate``/``next_token_topk`` write down every request (the prompt objects and the text the
model would read, rendered by the real ``Engine.render``, with a real tiny tokenizer's chat
template where it matters) and reply with canned text. That is the point of these tests: they
check which demonstrations each query sees, in which order, that a query never sees itself, and
what each hop or step is told, which a real model's output would not reveal. The last tests run
every method end to end on a tiny random checkpoint.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.pipeline.tiny_lm import direct_topk, tiny_engine, tiny_tokenizer
from w2s_jax.inference import Engine, Prompt, TopKResult
from w2s_jax.methods import MethodContext, get_method
from w2s_jax.methods.ask_to_improve import AskToImproveOptions
from w2s_jax.methods.bootstrap import BootstrapOptions
from w2s_jax.methods.context_distill import ContextDistillOptions
from w2s_jax.methods.icl_refine import ICLRefineOptions
from w2s_jax.methods.infer_and_respond import (
    PREFIXES,
    InferAndRespondOptions,
    complete_sentence,
)
from w2s_jax.tasks import Example, Generation, Task
from w2s_jax.tasks.demonstrations import QUERY_STOP


class QuestionTask(Task):
    """A minimal generation task: the prompt is the question itself."""

    name = "test-questions"

    def example(self, row, index, source):
        return Example(index=index, question=row["question"], answer=row.get("answer"))

    def prompt(self, example):
        return Prompt(user=example.question)

    def metric(self, examples, predictions, *, judge=None):
        return [{"score": float(p.strip() == e.answer)} for e, p in zip(examples, predictions)]


class RecordingEngine(Engine):
    """Records every request and answers ``reply(prompt)`` (no model)."""

    def __init__(self, tokenizer, reply, *, chat: bool = False, name: str = "stub"):
        super().__init__(None, tokenizer, chat=chat, name=name)
        self.reply, self.calls = reply, []

    def generate(self, prompts, *, max_new_tokens, sampler=None, key=None, stop_strings=(), example_ids=None):
        self.calls.append({"prompts": list(prompts), "text": [self.render(p) for p in prompts],
                           "stop": tuple(stop_strings), "max_new_tokens": max_new_tokens,
                           "example_ids": None if example_ids is None else list(example_ids)})
        return [self.reply(p) for p in prompts]

    def next_token_topk(self, prompts, completions, k):
        self.calls.append({"prompts": list(prompts), "completions": list(completions), "k": k})
        return [TopKResult(token_ids=[7] * 2, topk_ids=np.arange(2 * k).reshape(2, k) + i,
                           topk_probs=np.full((2, k), 1 / k, np.float32), kept_mass=np.ones(2))
                for i, _ in enumerate(prompts)]


QUESTIONS = ["what is red", "why is the sky blue", "how big is a cat", "who sat on the mat", "is it yes"]
WEAK = ["a colour", "because of the air", "small", "the dog", "no"]


def query_of(prompt: Prompt) -> str:
    """The question of an in-context query ``Question: q\\nAnswer:``."""
    return [line for line in prompt.user.split("\n") if line.startswith("Question: ")][-1].removeprefix("Question: ")


def demos_text(pairs) -> str:
    return "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)


def context(engines: dict, *, n: int = 5, upstream=None, num_intermediate: int = 0,
            upstream_options=None) -> MethodContext:
    task = QuestionTask()
    examples = [task.example({"question": q}, i, "test") for i, q in enumerate(QUESTIONS[:n])]
    if upstream_options is None:  # the upstream methods' default options, as the pipeline passes them
        upstream_options = {name: get_method(name).Options() for name in (upstream or {})}
    return MethodContext(task=task, examples=examples, weak=WEAK[:n], upstream=upstream or {},
                         engine=engines.__getitem__, generation=Generation(max_new_tokens=8),
                         num_intermediate=num_intermediate, upstream_options=upstream_options)


def run(method, ctx):
    return method.label(ctx, method.units(ctx))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("methods_tokenizer"))


# --- icl-refine (Algorithm 1) ---------------------------------------------------------------


def test_icl_refine_shows_each_query_the_rest_of_its_batch_in_batch_order(tokenizer):
    # the reply rambles into a next demonstration, which the label must not keep
    strong = RecordingEngine(tokenizer, lambda p: f" refined {query_of(p)}\n\nQuestion: more")
    method = get_method("icl-refine")(ICLRefineOptions(batch=3))
    ctx = context({"strong": strong})
    assert method.units(ctx) == [(0, 1, 2), (3, 4)]
    rows = run(method, ctx)
    (call,) = strong.calls
    expected_demos = [(1, 2), (0, 2), (0, 1), (4,), (3,)]
    assert call["text"] == [demos_text([(QUESTIONS[d], WEAK[d]) for d in demos])
                            + f"\n\nQuestion: {QUESTIONS[q]}\nAnswer:"
                            for q, demos in enumerate(expected_demos)]
    assert call["text"][0] == ("Question: why is the sky blue\nAnswer: because of the air\n\n"
                               "Question: how big is a cat\nAnswer: small\n\nQuestion: what is red\nAnswer:")
    assert QUERY_STOP in call["stop"]
    assert rows == [{"index": i, "completion": f" refined {q}", "demos": list(expected_demos[i])}
                    for i, q in enumerate(QUESTIONS)]
    assert call["example_ids"] == list(range(5))  # each row samples from its own example's key


def test_icl_refine_chat_form_puts_demonstrations_in_the_system_message(tokenizer):
    strong = RecordingEngine(tokenizer, lambda p: "x", chat=True)
    run(get_method("icl-refine")(ICLRefineOptions(batch=2)), context({"strong": strong}, n=2))
    assert strong.calls[0]["text"][0] == (
        "<s> system Question: why is the sky blue\nAnswer: because of the air </s> "
        "<s> user Question: what is red\nAnswer: </s> <s> assistant ")


def test_icl_refine_shuffled_batches_partition_the_questions(tokenizer):
    strong = RecordingEngine(tokenizer, lambda p: "x")
    method = get_method("icl-refine")(ICLRefineOptions(batch=2, shuffle_seed=3))
    ctx = context({"strong": strong})
    units = method.units(ctx)
    assert sorted(p for u in units for p in u) == list(range(5)) and units != [(0, 1), (2, 3, 4)]
    run(method, ctx)
    by_query = {query_of(p): p.system for p in strong.calls[0]["prompts"]}
    for unit in units:
        for q in unit:
            others = [(QUESTIONS[d], WEAK[d]) for d in unit if d != q]
            assert by_query[QUESTIONS[q]] == demos_text(others)


def test_icl_refine_fixed_demos_are_the_first_n_and_never_trained(tokenizer):
    strong = RecordingEngine(tokenizer, lambda p: f"r {query_of(p)}")
    method = get_method("icl-refine")(ICLRefineOptions(fixed_demos=2))
    ctx = context({"strong": strong})
    assert method.units(ctx) == [(2,), (3,), (4,)]
    rows = run(method, ctx)
    fixed = demos_text(list(zip(QUESTIONS[:2], WEAK[:2])))
    assert [p.system for p in strong.calls[0]["prompts"]] == [fixed] * 3
    assert [p.user for p in strong.calls[0]["prompts"]] == [f"Question: {q}\nAnswer:" for q in QUESTIONS[2:]]
    assert [r["index"] for r in rows] == [2, 3, 4]
    with pytest.raises(ValueError, match="fixed_demos=5 leaves no training question"):
        get_method("icl-refine")(ICLRefineOptions(fixed_demos=5)).units(ctx)


def test_icl_refine_fresh_draws_each_querys_own_demonstrations_whatever_the_chunking(tokenizer):
    """draw = "fresh": one unit per question, batch - 1 distinct demonstrations of its own, never
    itself, shown in the recorded order with their weak answers; the same labels whether the
    questions are labelled together, one by one or in reverse (the draw is keyed by the row)."""
    import jax

    strong = RecordingEngine(tokenizer, lambda p: f"r {query_of(p)}")
    method = get_method("icl-refine")(ICLRefineOptions(batch=3, draw="fresh"))
    ctx = context({"strong": strong})
    ctx.key = jax.random.key(7)
    assert method.units(ctx) == [(p,) for p in range(5)]
    rows = run(method, ctx)
    for row in rows:
        demos = row["demos"]
        assert len(demos) == 2 and len(set(demos)) == 2 and row["index"] not in demos
        assert set(demos) <= set(range(5))
    assert len({tuple(sorted(r["demos"])) for r in rows}) > 1  # not one shared batch
    shown = {query_of(p): p.system for p in strong.calls[0]["prompts"]}
    for row in rows:
        assert shown[QUESTIONS[row["index"]]] == demos_text([(QUESTIONS[d], WEAK[d]) for d in row["demos"]])
    one_by_one = [r for p in range(5) for r in method.label(ctx, [(p,)])]
    reversed_rows = method.label(ctx, [(p,) for p in reversed(range(5))])
    assert one_by_one == rows and sorted(reversed_rows, key=lambda r: r["index"]) == rows
    other = dataclasses.replace(ctx, key=jax.random.key(8))
    assert [r["demos"] for r in run(method, other)] != [r["demos"] for r in rows]  # the stage key matters
    short = get_method("icl-refine")(ICLRefineOptions(batch=8, draw="fresh"))  # more than the split: all others
    assert [sorted(r["demos"]) for r in run(short, ctx)] == [[d for d in range(5) if d != p] for p in range(5)]
    with pytest.raises(ValueError, match="needs at least 2 training questions"):
        short.units(context({"strong": strong}, n=1))
    with pytest.raises(ValueError, match="needs the stage's PRNG key"):
        method.label(context({"strong": strong}), [(0,)])


def test_fresh_demos_are_uniform_over_the_other_questions():
    """Over many keys, each of the other pool positions is drawn with probability n / (pool - 1)
    (uniform without replacement), the query never, and no position twice in one draw."""
    import jax

    from w2s_jax.tasks.demonstrations import fresh_demos

    pool, query, n, draws = 6, 2, 3, 1500
    counts = np.zeros(pool)
    for i in range(draws):
        demos = fresh_demos(jax.random.key(i), pool, query, n)
        assert len(set(demos)) == n and all(isinstance(d, int) for d in demos)
        counts[list(demos)] += 1
    assert counts[query] == 0
    others = np.delete(counts, query) / draws
    sd = np.sqrt(0.6 * 0.4 / draws)
    assert np.all(np.abs(others - n / (pool - 1)) < 4 * sd), others
    with pytest.raises(ValueError, match="cannot draw 6 demonstrations from the 5 other questions"):
        fresh_demos(jax.random.key(0), pool, query, 6)


def test_context_distill_rebuilds_fresh_icl_refine_prompts(tokenizer):
    """context-distill reads the fresh demonstrations from icl-refine's records: same prompts."""
    import jax

    icl_engine = RecordingEngine(tokenizer, lambda p: f"r {query_of(p)}")
    ctx = context({"strong": icl_engine})
    ctx.key = jax.random.key(3)
    icl_options = ICLRefineOptions(batch=4, draw="fresh")
    icl_rows = run(get_method("icl-refine")(icl_options), ctx)
    upstream = {"icl-refine": {r["index"]: r for r in icl_rows}}
    strong = RecordingEngine(tokenizer, None)
    method = get_method("context-distill")(ContextDistillOptions(top_k=2))
    rows = run(method, context({"strong": strong}, upstream=upstream, upstream_options={"icl-refine": icl_options}))
    (call,) = strong.calls
    icl_prompts = dict(zip(map(query_of, icl_engine.calls[0]["prompts"]), icl_engine.calls[0]["prompts"]))
    assert call["prompts"] == [icl_prompts[query_of(p)] for p in call["prompts"]]
    assert sorted(r["index"] for r in rows) == list(range(5))
    assert all(p.system.count("Question:") == 3 for p in call["prompts"])


# --- infer-and-respond (Algorithm 2) ---------------------------------------------------------


def test_infer_and_respond_infers_one_sentence_per_batch_then_answers_following_it(tokenizer):
    def reply(prompt):
        if prompt.user.endswith(PREFIXES["style"]):  # the inference request
            if "what is red" in prompt.system:
                return " a pirate. Then more\nand more"
            return "The answers are written in the style of a poet who rhymes\nQuestion: next"
        return f" answer to {prompt.user}"

    strong = RecordingEngine(tokenizer, reply)
    options = InferAndRespondOptions(batch=2)
    method = get_method("infer-and-respond")(options)
    ctx = context({"strong": strong}, n=4)
    assert method.units(ctx) == [(0, 1), (2, 3)]
    rows = run(method, ctx)
    infer, answer = strong.calls
    assert infer["text"] == [
        demos_text([(QUESTIONS[0], WEAK[0]), (QUESTIONS[1], WEAK[1])])
        + f"\n\n{options.describe}\nThe answers are written in the style of",
        demos_text([(QUESTIONS[2], WEAK[2]), (QUESTIONS[3], WEAK[3])])
        + f"\n\n{options.describe}\nThe answers are written in the style of",
    ]
    assert infer["max_new_tokens"] == options.max_sentence_tokens
    pirate = "The answers are written in the style of a pirate."
    poet = "The answers are written in the style of a poet who rhymes."
    assert answer["prompts"] == [Prompt(system=f"{s} Answer the question in that way.", user=q)
                                 for s, q in zip([pirate, pirate, poet, poet], QUESTIONS)]
    assert answer["text"][0] == f"{pirate} Answer the question in that way.\n\nwhat is red"
    assert rows == [{"index": i, "completion": f" answer to {q}", "inferred": s}
                    for i, (q, s) in enumerate(zip(QUESTIONS, [pirate, pirate, poet, poet]))]


def test_infer_and_respond_prefix_options():
    assert InferAndRespondOptions().sentence_prefix == PREFIXES["style"]
    technique = InferAndRespondOptions(kind="technique").sentence_prefix
    assert technique == "The answers explain using the technique of"
    assert InferAndRespondOptions(kind="technique", prefix="They all use ").sentence_prefix == "They all use"
    with pytest.raises(ValueError, match=r"infer-and-respond.kind must be one of \['style', 'technique'\]"):
        InferAndRespondOptions(kind="tone")
    with pytest.raises(ValueError, match="methods.infer-and-respond.respond must contain '{behaviour}'"):
        InferAndRespondOptions(respond="Answer.")
    with pytest.raises(ValueError, match="methods.infer-and-respond.batch must be an int >= 2"):
        InferAndRespondOptions(batch=1)


@pytest.mark.parametrize("continuation, sentence", [
    (" a pirate. More text.", "P a pirate."),
    (" a pirate\nMore text", "P a pirate."),
    ("\n a pirate, mostly! Yes", "P a pirate, mostly!"),
    ("P a judge who is terse.", "P a judge who is terse."),  # a restated prefix is dropped
    (" version 2.5 of the manual", "P version 2.5 of the manual."),  # "2.5" is no sentence end
    ("", "P."),
])
def test_complete_sentence_cuts_at_the_first_sentence_end(continuation, sentence):
    assert complete_sentence("P", continuation) == sentence


# --- ask-to-improve (Algorithm 3) ------------------------------------------------------------


def test_ask_to_improve_shows_each_question_with_its_weak_answer(tokenizer):
    weak_of = lambda prompt: prompt.user.split("Answer: ")[1].split("\n")[0]  # noqa: E731
    strong = RecordingEngine(tokenizer, lambda p: f" better than {weak_of(p)}\n\nQuestion: x")
    options = AskToImproveOptions()
    method = get_method("ask-to-improve")(options)
    ctx = context({"strong": strong}, n=3)
    assert method.units(ctx) == [(0,), (1,), (2,)]
    rows = run(method, ctx)
    (call,) = strong.calls
    assert call["prompts"] == [Prompt(system=options.instruction,
                                      user=f"Question: {q}\nAnswer: {w}\n\nImproved answer:")
                               for q, w in zip(QUESTIONS[:3], WEAK)]
    assert call["text"][1] == (f"{options.instruction}\n\nQuestion: why is the sky blue\n"
                               "Answer: because of the air\n\nImproved answer:")
    assert QUERY_STOP in call["stop"]
    assert rows == [{"index": i, "completion": f" better than {w}"} for i, w in enumerate(WEAK[:3])]
    with pytest.raises(ValueError, match="methods.ask-to-improve.instruction must be a non-empty string"):
        AskToImproveOptions(instruction=" ")


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_hops_refine_the_previous_hops_labels(tokenizer):
    engines = {role: RecordingEngine(tokenizer, lambda p, r=role: f" {r} on {query_of(p)}\n\nQuestion: x")
               for role in ("intermediate:0", "intermediate:1", "strong")}
    method = get_method("bootstrap")(BootstrapOptions(batch=2))
    ctx = context(engines, n=4, num_intermediate=2)
    assert method.units(ctx) == [(0, 1), (2, 3)]
    rows = run(method, ctx)
    demos = {0: 1, 1: 0, 2: 3, 3: 2}
    previous = dict(enumerate(WEAK))  # hop 1 reads the weak answers
    for role in ("intermediate:0", "intermediate:1", "strong"):
        (call,) = engines[role].calls  # the whole chunk in one call per hop
        assert call["text"] == [demos_text([(QUESTIONS[demos[q]], previous[demos[q]])])
                                + f"\n\nQuestion: {QUESTIONS[q]}\nAnswer:" for q in range(4)]
        previous = {q: f"{role} on {QUESTIONS[q]}" for q in range(4)}  # cleaned labels of this hop
    assert rows == [{"index": q, "completion": f" strong on {QUESTIONS[q]}",
                     "hops": [f"intermediate:0 on {QUESTIONS[q]}", f"intermediate:1 on {QUESTIONS[q]}"]}
                    for q in range(4)]


def test_bootstrap_without_an_intermediate_model_points_to_icl_refine(tokenizer):
    ctx = context({"strong": RecordingEngine(tokenizer, lambda p: "x")})
    with pytest.raises(ValueError, match="needs at least one intermediate model.*use icl-refine"):
        get_method("bootstrap")().units(ctx)


# --- context-distill ---------------------------------------------------------------------------


@pytest.mark.parametrize("placement", ["system", "user"])
def test_context_distill_asks_for_top_k_after_icl_refines_exact_prompt(tokenizer, placement):
    icl_engine = RecordingEngine(tokenizer, lambda p: f"r {query_of(p)}")
    ctx = context({"strong": icl_engine})
    icl_options = ICLRefineOptions(batch=3, shuffle_seed=1, placement=placement)
    icl_rows = run(get_method("icl-refine")(icl_options), ctx)
    upstream = {"icl-refine": {r["index"]: r for r in icl_rows}}
    assert all(r["demos"] and r["index"] not in r["demos"] for r in icl_rows)  # what demonstrated it
    upstream["icl-refine"][4] = {**upstream["icl-refine"][4], "completion": " "}  # empty: no row
    strong = RecordingEngine(tokenizer, None)
    method = get_method("context-distill")(ContextDistillOptions(top_k=3))  # nothing restated
    ctx = context({"strong": strong}, upstream=upstream, upstream_options={"icl-refine": icl_options})
    rows = run(method, ctx)
    (call,) = strong.calls
    icl_prompts = dict(zip(map(query_of, icl_engine.calls[0]["prompts"]), icl_engine.calls[0]["prompts"]))
    assert call["prompts"] == [icl_prompts[query_of(p)] for p in call["prompts"]]  # same prompts
    assert sorted(map(query_of, call["prompts"])) == sorted(QUESTIONS[:4])
    assert call["k"] == 3 and call["completions"] == [f" r {query_of(p)}" for p in call["prompts"]]
    assert [r["index"] for r in rows] == [QUESTIONS.index(query_of(p)) for p in call["prompts"]]
    assert rows[1] == {"index": rows[1]["index"], "completion": call["completions"][1],
                       "teacher_ids": [[1, 2, 3], [4, 5, 6]],
                       "teacher_probs": [[float(np.float32(1 / 3))] * 3] * 2}
    with pytest.raises(ValueError, match="no icl-refine label for training example 0"):
        method.label(context({"strong": strong}, upstream={"icl-refine": {}}), [(0, 1, 2)])
    old = {"icl-refine": {i: {"index": i, "completion": " x"} for i in range(5)}}
    with pytest.raises(ValueError, match="does not list its demonstrations"):
        method.label(context({"strong": strong}, upstream=old), [(0,)])
    with pytest.raises(ValueError, match="methods.context-distill.top_k must be an int >= 1"):
        ContextDistillOptions(top_k=0)


def test_context_distill_targets_equal_the_strong_models_direct_probabilities(tokenizer):
    """The stored targets are the softmax of one unpadded forward pass over prompt + completion,
    its top-k, renormalised (``direct_topk``)."""
    from w2s_jax.tasks.demonstrations import in_context_prompt

    strong = tiny_engine(tokenizer, seed=2)
    completions = [" the cat sat", " yes", " a big dog", " no it is"]
    upstream = {"icl-refine": {i: {"index": i, "completion": c, "demos": [[1, 0, 3, 2][i]]}
                               for i, c in enumerate(completions)}}
    ctx = context({"strong": strong}, n=4, upstream=upstream)
    rows = run(get_method("context-distill")(ContextDistillOptions(top_k=4)), ctx)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    for row, other in zip(rows, [1, 0, 3, 2]):
        prompt = in_context_prompt([(QUESTIONS[other], WEAK[other])], QUESTIONS[row["index"]])
        ids, top_ids, probs, _ = direct_topk(strong, prompt, row["completion"], 4)
        assert len(row["teacher_ids"]) == len(ids) == len(row["completion"].split())
        np.testing.assert_array_equal(row["teacher_ids"], top_ids)
        np.testing.assert_allclose(row["teacher_probs"], probs, atol=1e-5)


# --- every method end to end on a tiny random checkpoint ----------------------------------------


END_TO_END = {
    "icl-refine": ICLRefineOptions(batch=2),
    "infer-and-respond": InferAndRespondOptions(batch=2, max_sentence_tokens=4),
    "ask-to-improve": AskToImproveOptions(),
    "bootstrap": BootstrapOptions(batch=2),
    "context-distill": ContextDistillOptions(top_k=3),
}


@pytest.mark.parametrize("name", sorted(END_TO_END))
def test_method_runs_end_to_end_on_a_tiny_checkpoint(tokenizer, name):
    engines = {"strong": tiny_engine(tokenizer, seed=0), "intermediate:0": tiny_engine(tokenizer, seed=1)}
    upstream = {"icl-refine": {i: {"index": i, "completion": " the cat", "demos": [i ^ 1]} for i in range(4)}}
    ctx = context(engines, n=4, upstream=upstream, num_intermediate=1)
    ctx.generation = Generation(max_new_tokens=3)
    method = get_method(name)(END_TO_END[name])
    units = method.units(ctx)
    rows = method.label(ctx, units)
    assert sorted(r["index"] for r in rows) == sorted(p for unit in units for p in unit) == [0, 1, 2, 3]
    assert all(isinstance(r["completion"], str) for r in rows)
    if name == "context-distill":
        assert all(np.asarray(r["teacher_ids"]).shape == (2, 3) for r in rows)
        np.testing.assert_allclose([np.sum(r["teacher_probs"], -1) for r in rows], 1.0, atol=1e-5)


# --- prompt layouts as options ------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(placement="middle"), r"methods.icl-refine.placement must be one of \('system', 'user'\)"),
    (dict(demo="Q: {q}"), r"methods.icl-refine.demo: bad placeholder"),
    (dict(query="Question:"), r"methods.icl-refine.query must contain \{question\}"),
    (dict(demo="Q: {question}"), r"methods.icl-refine.demo must contain \{answer\}"),
    (dict(cut=-1), r"methods.icl-refine.cut must be an int >= 0"),
    (dict(fixed_demos=[1, 1]), r"fixed_demos must be an int >= 0 or a list of distinct positions"),
    (dict(fixed_demos=[]), r"fixed_demos must be an int >= 0 or a list"),
    (dict(draw="random"), r"methods.icl-refine.draw must be one of \['batch', 'fresh'\]"),
    (dict(draw="fresh", fixed_demos=2), r"it takes no fixed_demos or shuffle_seed"),
    (dict(draw="fresh", shuffle_seed=1), r"it takes no fixed_demos or shuffle_seed"),
])
def test_icl_refine_layout_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ICLRefineOptions(**kwargs)


def test_icl_refine_user_placement_and_listed_fixed_demos(tokenizer):
    strong = RecordingEngine(tokenizer, lambda p: "x")
    options = ICLRefineOptions(fixed_demos=[0, 2], placement="user", demo="Q: {question} A: {answer}",
                               separator=" | ", query="Q: {question} A:", query_separator=" || ",
                               demo_system="Be brief.", strip_newlines=True, cut=1)
    method = get_method("icl-refine")(options)
    ctx = context({"strong": strong})
    ctx.weak = ["a\ncolour", *WEAK[1:]]
    assert method.units(ctx) == [(3,), (4,)]
    run(method, ctx)
    assert strong.calls[0]["prompts"][0] == Prompt(
        system="Be brief.", user="Q: what is red A: acolour | Q: how big is a cat A: smal || Q: who sat on the mat A:")


def test_infer_and_respond_and_ask_to_improve_prompt_options():
    with pytest.raises(ValueError, match=r"methods.infer-and-respond.respond_user: bad placeholder"):
        InferAndRespondOptions(respond_user="Q: {query}")
    with pytest.raises(ValueError, match=r"methods.infer-and-respond.detector must be a non-empty string"):
        InferAndRespondOptions(detector=" ")
    from w2s_jax.methods.ask_to_improve import improve_prompt

    assert improve_prompt("q?", "a!", AskToImproveOptions(cue="", cut=1, instruction="Fix it.")) == Prompt(
        system="Fix it.", user="Question: q?\nAnswer: a")
