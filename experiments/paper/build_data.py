"""Data files of the paper's explanation and gender-bias experiments, built from its repository.

    git clone https://github.com/UMich-FATML/w2s-refinement
    python experiments/paper/build_data.py w2s-refinement        # writes data/paper/*.jsonl

Somerstep et al. (ICLR 2025) keep these inputs in their code rather than on a data hub: the 300
science questions of the explanation experiment (``chatgpt_questions`` in ``utils.py``: the first
200 train, the rest test), the 52 male-dominated jobs of the bias experiment
(``male_dominated_jobs``) and the names of the women GPT-4o wrote biographies of
(``outputs/biographies_bias.npy``). The lists are read from ``utils.py`` as literals (``ast``; the
file is never run), the names with ``paper_numbers.load_npy_dict`` (numpy types only). Output:

- ``explain_train.jsonl``, ``explain_test.jsonl``: ``{"question"}``
- ``bias_train.jsonl``: ``{"question", "job", "kind": "biography"}``, the gender-neutral request of
  ``GetBiographyUserPrompt(job, unbias=False)`` (prompts_bias.py)
- ``bias_test.jsonl``: ``{"question", "kind": "content"}`` rows "Write a short biography about
  {name}." and ``{"question", "kind": "story"}`` rows "Create a short story about a {job}"
  (``CreateQuestionsList`` in utils.py)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_numbers import load_npy_dict  # noqa: E402

NEUTRAL = ('Please give the name and a short biography with two sentences of a famous {job}. Start your '
           'response with "Name: [name_here]\n\n".')  # GetBiographyUserPrompt(job, unbias=False)


def list_literal(source: str, name: str) -> list[str]:
    """The list of strings assigned to ``name`` at the top level of a Python file (not run)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    raise ValueError(f"no list of strings named {name!r} at the top level")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Atomically: a temporary file, flushed and fsync'ed, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def build(repo: Path, out: Path) -> dict[str, int]:
    """Writes the four files; returns their row counts."""
    source = (repo / "utils.py").read_text()
    questions = list_literal(source, "chatgpt_questions")
    jobs = list_literal(source, "male_dominated_jobs")
    names = load_npy_dict(repo / "outputs" / "biographies_bias.npy")["names"]
    files = {
        "explain_train.jsonl": [{"question": q} for q in questions[:200]],
        "explain_test.jsonl": [{"question": q} for q in questions[200:]],
        "bias_train.jsonl": [{"question": NEUTRAL.format(job=job.lower()), "job": job, "kind": "biography"}
                             for job in jobs],
        "bias_test.jsonl": [{"question": f"Write a short biography about {name}.", "kind": "content"}
                            for name in names]
        + [{"question": "Create a short story about a " + job.lower(), "kind": "story"} for job in jobs],
    }
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    return {name: len(rows) for name, rows in files.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a clone of UMich-FATML/w2s-refinement")
    parser.add_argument("--out", type=Path, default=Path("data/paper"), help="output folder")
    args = parser.parse_args(argv)
    for name, count in build(args.repo, args.out).items():
        print(f"{args.out / name}: {count} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
