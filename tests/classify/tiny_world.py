"""A tiny classification world for `w2s run` tests: SciQ-shaped data files written at test time,
two tiny random checkpoints (through the same loaders as a user's), and the experiment file.

The questions are built so that the label is learnable from the text: a correct answer repeats
the question's first word. Nothing is downloaded.
"""

import json
import random
import textwrap

from tests.lm.hf_fixtures import SPECIAL_TOKENS, WORDS, make_hf_checkpoint

CONTENT = [w for w in WORDS if w not in ("yes", "no")]


def sciq_rows(n: int, seed: int) -> list[dict]:
    """SciQ-shaped rows: question, correct_answer, distractor1..3 (each question different)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        words = [rng.choice(CONTENT) for _ in range(5)]
        question = " ".join(words)
        if question in seen:
            continue
        seen.add(question)
        others = [w for w in CONTENT if w != words[0]]
        rows.append({"question": question, "correct_answer": f"{words[0]} {rng.choice(CONTENT)}",
                     **{f"distractor{i}": f"{rng.choice(others)} {rng.choice(CONTENT)}" for i in (1, 2, 3)}})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_world(root, *, seeds=(0, 1), extra: str = ""):
    """(root, experiment file) of the tiny world under ``root``."""
    vocab = len(SPECIAL_TOKENS) + len(WORDS)
    if not (root / "train.jsonl").exists():
        make_hf_checkpoint(root / "strong", "llama", seed=0, vocab_size=vocab)
        make_hf_checkpoint(root / "weak", "llama", seed=1, vocab_size=vocab, num_hidden_layers=1)
        write_jsonl(root / "train.jsonl", sciq_rows(48, 0))
        write_jsonl(root / "test.jsonl", [r for r in sciq_rows(80, 1)
                                          if r["question"] not in {q["question"] for q in sciq_rows(48, 0)}][:24])
    [strong] = list((root / "strong").iterdir())
    [weak] = list((root / "weak").iterdir())
    experiment = root / "tiny-cls.toml"
    experiment.write_text(textwrap.dedent(f"""
        kind = "classification"
        name = "tiny-cls"
        seeds = {list(seeds)}
        chunk_size = 8

        [task]
        dataset = "sciq"
        train = "{root / 'train.jsonl'}"
        test = "{root / 'test.jsonl'}"
        answers = [" no", " yes"]
        n_train = 32
        n_test = 16

        [models]
        weak = ["{weak}"]
        strong = ["{strong}"]
        batch_size = 8

        [train]
        total_steps = 3
        warmup_steps = 1
        batch_size = 4
        max_len = 24
        learning_rate = 0.01

        [losses]
        run = ["xent"]

        [repair.knn]
        probe = "knn"
        mode = "relabel"

        [icl]
        demos = 2

        [report]
        bootstrap = 100
    """) + extra)
    return root, experiment
