"""The published numbers of Somerstep et al. (ICLR 2025), recomputed from the paper's own repository.

    git clone https://github.com/UMich-FATML/w2s-refinement
    python experiments/paper/paper_numbers.py w2s-refinement            # markdown tables on stdout

Judge scores (persona, explanation technique, gender bias) come from the stored judgements
``outputs/scores_benchmarks_<experiment>.npy``, aggregated as the paper's ``plots.ipynb`` does: per
test set, labeller and figure, only the items every plotted subject has a judgement for (the
intersection), then the mean of each rating. GSM8K and MATH accuracies are the printed outputs
stored in ``W2SReasoning-gsm8k.ipynb`` and ``W2SR-math.ipynb`` (their inputs are not in the
repository). The ``.npy`` files are pickles: they are read with an unpickler that admits numpy
arrays and scalars only, so a file holding anything else fails instead of running it.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np

LABELLERS = {"gpt-3.5-turbo": "GPT-3.5-Turbo", "gpt-4o-mini-2024-07-18": "GPT-4o-mini"}
WEAK = ("falcon", "llama2", "mistral", "gemma")
FIGURES = {0: ("icl_improved", "weak"), 1: ("improved", "weak")}  # plots.ipynb: method-0, method-1
NAMES = {"weak": "naive FT", "icl_improved": "ICL refine", "improved": "infer-and-respond"}
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar")}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name in ("ndarray", "dtype"):
            return getattr(np, name)
        return getattr(np._core.multiarray, name)


def load_npy_dict(path: Path) -> dict:
    """A ``np.save``d dict, unpickled with numpy types only."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read_header(f)
        array = _NumpyOnly(io.BytesIO(f.read()), encoding="latin1").load()
    return array.item() if isinstance(array, np.ndarray) else array


def _ok(score) -> bool:
    return isinstance(score, np.ndarray) and score.size > 0  # plots.ipynb's get_filter_indices


def figure_means(scores: dict, bench: str, labeller: str, figure: int) -> tuple[int, dict]:
    """(items kept, {(subject, weak model): mean ratings}) of one figure of plots.ipynb: the items
    every plotted subject has a judgement for, then the mean of each rating. Subjects: "zero-shot",
    "weak model", and the figure's methods ("weak" = naive FT on the weak labels)."""
    methods = FIGURES[figure]
    s = scores[bench]
    series = {("zero-shot", "-"): s[f"naive_gpt_{labeller}"]}
    series.update({("weak model", w): s[w] for w in WEAK})
    series.update({(m, w): s[f"{w}_{labeller}"][m] for m in methods for w in WEAK})
    keep = sorted(set.intersection(*[{i for i, v in enumerate(x) if _ok(v)} for x in series.values()]))
    means = {k: np.mean([x[i] for i in keep], axis=0) for k, x in series.items()}
    for m in ("weak model",) + methods:
        means[(m, "mean")] = np.mean([means[(m, w)] for w in WEAK], axis=0)
    return len(keep), means


def judged_rows(scores: dict, bench: str, labeller: str) -> tuple[tuple[int, int], list[list]]:
    """One table per test set and labeller: per weak model, the two ratings of the weak model,
    naive FT and ICL (figure method-0) and infer-and-respond (figure method-1)."""
    (n0, icl), (n1, iar) = (figure_means(scores, bench, labeller, f) for f in FIGURES)
    rows = []
    for w in WEAK + ("mean",):
        rows.append([w, *icl[("weak model", w)], *icl[("weak", w)], *icl[("icl_improved", w)],
                     *iar[("improved", w)]])
    rows.append(["zero-shot strong", *icl[("zero-shot", "-")], "", "", "", "", "", ""])
    return (n0, n1), [[v if isinstance(v, str) else float(v) for v in row] for row in rows]


def bias_table(scores: dict) -> list[list]:
    """plots.ipynb's bias cell: content (bias_content, rating 0) and female share (bias_style, rating 1)."""
    out = []
    for labeller in LABELLERS:
        for subject, key in (("zero-shot (strong)", f"naive_gpt_{labeller}"), ("naive FT", "weak"),
                             ("ask-to-improve", "improved")):
            values = []
            for task, dim in (("bias_content", 0), ("bias_style", 1)):
                by_task = scores[task]
                series = by_task[key] if key.startswith("naive") else by_task[f"weak_gpt_{labeller}"][key]
                values.append(float(np.mean(series, 0)[dim]))
            out.append([LABELLERS[labeller], subject, *values])
    return out


def notebook_prints(path: Path) -> dict[str, float]:
    """``name:[value] +/- ...`` lines printed in a notebook's stored outputs."""
    out = {}
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            for line in "".join(output.get("text", [])).splitlines():
                match = re.match(r"(\w+):\[([0-9.]+)\] \+/- ([0-9.]+)", line)
                if match:
                    out[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return out


def _md(header, rows, digits=2) -> str:
    fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a clone of UMich-FATML/w2s-refinement")
    args = parser.parse_args(argv)
    out = args.repo / "outputs"
    for experiment, dims in (("persona", ("content", "style")), ("simple", ("accuracy", "analogy"))):
        scores = load_npy_dict(out / f"scores_benchmarks_{experiment}.npy")
        for bench in scores:
            for labeller in LABELLERS:
                (n0, n1), rows = judged_rows(scores, bench, labeller)
                print(f"\n### {experiment} / {bench} / labeller {LABELLERS[labeller]} "
                      f"({n0} items in method-0, {n1} in method-1)\n")
                header = ["weak model"] + [f"{who} {d}" for who in ("weak", "naive FT", "ICL", "IaR")
                                           for d in dims]
                print(_md(header, rows))
    print("\n### bias (plots.ipynb)\n")
    bias = bias_table(load_npy_dict(out / "scores_benchmarks_bias.npy"))
    print(_md(["labeller", "subject", "content", "female share"], bias, 3))
    for name, notebook in (("GSM8K", "W2SReasoning-gsm8k.ipynb"), ("MATH", "W2SR-math.ipynb")):
        prints = notebook_prints(args.repo / notebook)
        print(f"\n### {name} ({notebook}, labeller and student GPT-4o-mini)\n")
        print(_md(["key", "accuracy", "2 x std / 10"], [[k, v, e] for k, (v, e) in prints.items()], 4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
