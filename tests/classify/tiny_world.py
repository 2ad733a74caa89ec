"""A tiny classification world for `w2s run` tests: SciQ-shaped data files written at test time and
two tiny random checkpoints (loaded through the same loaders as a user's), on which the shipped
``experiments/classification_tiny.toml`` runs with ``--set`` overrides.

The questions are built so that the label is learnable from the text: a correct answer repeats
the question's first word. Nothing is downloaded.
"""

import json
import random
from pathlib import Path

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


SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "classification_tiny.toml"


def make_world(root) -> list[str]:
    """Writes the tiny checkpoints and data files under ``root`` (once); returns the ``--set``
    overrides that run the shipped ``experiments/classification_tiny.toml`` on them."""
    vocab = len(SPECIAL_TOKENS) + len(WORDS)
    if not (root / "train.jsonl").exists():
        make_hf_checkpoint(root / "strong", "llama", seed=0, vocab_size=vocab)
        make_hf_checkpoint(root / "weak", "llama", seed=1, vocab_size=vocab, num_hidden_layers=1)
        train = sciq_rows(48, 0)
        write_jsonl(root / "train.jsonl", train)
        questions = {r["question"] for r in train}
        write_jsonl(root / "test.jsonl", [r for r in sciq_rows(80, 1) if r["question"] not in questions][:24])
    [strong] = list((root / "strong").iterdir())
    [weak] = list((root / "weak").iterdir())
    return [f'task.train="{root / "train.jsonl"}"', f'task.test="{root / "test.jsonl"}"',
            'task.answers=[" no", " yes"]', "task.n_train=32", "task.n_test=16",
            f'models.weak=["{weak}"]', f'models.strong=["{strong}"]', "models.batch_size=8",
            "train.total_steps=3", "train.batch_size=4", "train.max_len=24", "train.learning_rate=0.01",
            "chunk_size=8", "report.bootstrap=100", "repair.knn.k=4"]


def tiny_config(root, extra=()):
    """The shipped tiny experiment on the tiny world under ``root``, with ``extra`` overrides."""
    from w2s_jax.classify import load_classification

    return load_classification(SHIPPED, overrides=[*make_world(root), *extra])
