"""A tiny `w2s run` world shared by the pipeline's end-to-end tests: a test task registered once
(word overlap with the gold answer, so random models get varied scores), two tiny random
checkpoints, ten training and six test rows, and the experiment file."""

import json
import textwrap

from tests.lm.hf_fixtures import SPECIAL_TOKENS, WORDS, make_hf_checkpoint
from w2s_jax.inference import Prompt
from w2s_jax.pipeline import run_experiment
from w2s_jax.tasks.base import Example, Task, field, register


@register
class OverlapTask(Task):
    """Test task: answer with words; scored by word overlap (Jaccard) with the gold answer."""

    name = "test-overlap"

    def example(self, row, index, source):
        return Example(index, field(row, "question", index, source), row.get("answer"), row)

    def prompt(self, example):
        return Prompt(user=example.question)

    def metric(self, examples, predictions, *, judge=None):
        out = []
        for example, prediction in zip(examples, predictions):
            a, b = set(example.answer.split()), set(prediction.split())
            out.append({"overlap": len(a & b) / max(len(a | b), 1)})
        return out

    def metric_names(self):
        return ("overlap",)


def _rows(n, seed):
    import random

    rng = random.Random(seed)
    words = WORDS[4:]
    return [{"question": " ".join(rng.choice(words) for _ in range(rng.randint(3, 6))),
             "answer": " ".join(rng.choice(words) for _ in range(2))} for _ in range(n)]


def make_world(root):
    """(root, experiment file) of the tiny world written under ``root``."""
    vocab = len(SPECIAL_TOKENS) + len(WORDS)  # every sampled id decodes to a word
    strong = make_hf_checkpoint(root / "strong", "llama", seed=0, vocab_size=vocab)
    weak = make_hf_checkpoint(root / "weak", "llama", seed=1, vocab_size=vocab, num_hidden_layers=1)
    for name, rows in (("train", _rows(10, 0)), ("test", _rows(6, 1))):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    experiment = root / "tiny.toml"
    experiment.write_text(textwrap.dedent(f"""
        name = "tiny"
        chunk_size = 4
        [task]
        name = "test-overlap"
        [data]
        train = "{root / 'train.jsonl'}"
        test = "{root / 'test.jsonl'}"
        [models]
        strong = "{strong}"
        weak = ["{weak}"]
        batch_size = 4
        length_bucket = 16
        [methods]
        run = ["zero-shot", "naive", "icl-refine", "gold"]
        [methods.icl-refine]
        batch = 3
        [generation]
        max_new_tokens = 3
        [train]
        total_steps = 3
        warmup_steps = 1
        batch_size = 4
        max_len = 64
        learning_rate = 0.01
        [report]
        bootstrap = 200
    """))
    return root, experiment


def _run(experiment, out, **kw):
    lines = []
    results = run_experiment(experiment, run_dir=out, show_progress=False, log=lines.append, **kw)
    return results, lines
