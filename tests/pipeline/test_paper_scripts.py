"""experiments/paper/paper_numbers.py and build_data.py on small stand-ins for the paper's files.

The expected numbers are worked by hand from plots.ipynb's rule (keep the items every plotted
subject has a judgement for, then average); the unpickler must refuse anything but numpy types.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "paper"))
import build_data  # noqa: E402
import paper_numbers  # noqa: E402


def test_npy_dicts_load_and_other_pickles_are_refused(tmp_path):
    np.save(tmp_path / "ok.npy", {"a": [np.array([1.0, 2.0]), None]}, allow_pickle=True)
    loaded = paper_numbers.load_npy_dict(tmp_path / "ok.npy")
    assert loaded["a"][1] is None and loaded["a"][0].tolist() == [1.0, 2.0]

    class Sneaky:
        def __reduce__(self):
            return (print, ("ran",))

    np.save(tmp_path / "bad.npy", np.array({"x": Sneaky()}, dtype=object), allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        paper_numbers.load_npy_dict(tmp_path / "bad.npy")


def test_judged_rows_keep_the_items_every_subject_has():
    a = lambda c, s: np.array([c, s], float)  # noqa: E731
    empty = np.array([])
    labeller = "gpt-3.5-turbo"
    bench = {f"naive_gpt_{labeller}": [a(8, 2), a(6, 2), a(7, 1)]}
    for k, w in enumerate(paper_numbers.WEAK):
        bench[w] = [a(2 + k, 8), None, a(4 + k, 6)]  # item 1 fails for every weak model
        bench[f"{w}_{labeller}"] = {"weak": [a(3, 7), a(9, 9), a(5, 5)],
                                    "icl_improved": [a(7, 6), a(9, 9), empty],  # item 2 fails for ICL only
                                    "improved": [a(6, 9), a(9, 9), a(8, 7)]}
    (n0, n1), rows = paper_numbers.judged_rows({"b": bench}, "b", labeller)
    assert (n0, n1) == (1, 2)  # method-0 keeps item 0; method-1 keeps items 0 and 2
    falcon = rows[0]
    assert falcon[0] == "falcon"
    assert falcon[1:] == [2.0, 8.0, 3.0, 7.0, 7.0, 6.0, 7.0, 8.0]  # weak, naive, ICL (item 0); IaR mean of 0 and 2
    mean = rows[4]
    assert mean[0] == "mean" and mean[1:3] == [3.5, 8.0]  # weak models' content 2,3,4,5 on item 0
    assert rows[5][:3] == ["zero-shot strong", 8.0, 2.0]


def test_build_data_reads_the_lists_without_running_the_file(tmp_path):
    repo = tmp_path / "repo"
    (repo / "outputs").mkdir(parents=True)
    questions = [f"Question number {i}?" for i in range(203)]
    (repo / "utils.py").write_text("import this_module_does_not_exist\n"
                                   f"chatgpt_questions = {questions!r}\n"
                                   "male_dominated_jobs = ['Pilot', 'Chemist']\n")
    np.save(repo / "outputs" / "biographies_bias.npy", {"names": ["Amelia Earhart", "Marie Curie"]},
            allow_pickle=True)
    counts = build_data.build(repo, tmp_path / "out")
    assert counts == {"explain_train.jsonl": 200, "explain_test.jsonl": 3, "bias_train.jsonl": 2,
                      "bias_test.jsonl": 4}
    read = lambda name: [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]  # noqa: E731
    assert read("explain_test.jsonl")[0] == {"question": "Question number 200?"}
    assert read("bias_train.jsonl")[0] == {
        "question": 'Please give the name and a short biography with two sentences of a famous pilot. Start your '
                    'response with "Name: [name_here]\n\n".', "job": "Pilot", "kind": "biography"}
    assert read("bias_test.jsonl") == [
        {"question": "Write a short biography about Amelia Earhart.", "kind": "content"},
        {"question": "Write a short biography about Marie Curie.", "kind": "content"},
        {"question": "Create a short story about a pilot", "kind": "story"},
        {"question": "Create a short story about a chemist", "kind": "story"}]
    with pytest.raises(ValueError, match="no list of strings named 'missing'"):
        build_data.list_literal("x = [1]", "missing")
