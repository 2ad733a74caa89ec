"""The stored dataset configurations: each turns fixture rows into the items its docstring
describes, draws per row (the same seed, the same items), balances by downsampling, and names the
row and field of a bad row."""

import json

import numpy as np
import pytest

from w2s_jax.classify.datasets import FORMATS, FormatError, balance, dataset_format, to_items


def items(name, rows, seed=0, **options):
    return to_items(dataset_format(name, options), rows, seed=seed, split="train", source="f.jsonl")


def test_every_stored_configuration_is_registered():
    assert set(FORMATS.all()) == {"sciq", "boolq", "cosmos-qa", "anthropic-hh", "amazon-polarity", "text-label"}


def test_sciq_pairs_a_question_with_its_correct_answer_or_a_distractor():
    rows = [{"question": f"q{i}", "correct_answer": "right", "distractor1": "d1", "distractor2": "d2",
             "distractor3": "d3"} for i in range(400)]
    out = items("sciq", rows)
    for row, item in zip(rows, out):
        answer = item["text"].split(" A: ")[1]
        assert item["text"].startswith(f"Q: {row['question']} A: ")
        assert (answer == "right") == (item["label"] == 1)
        assert answer in ("right", "d1", "d2", "d3")
    labels = np.asarray([i["label"] for i in out])
    assert abs(labels.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(out))  # a fair coin: 4 standard errors
    assert {i["text"].split(" A: ")[1] for i in out if i["label"] == 0} == {"d1", "d2", "d3"}
    # a row's draw is its own: the same row at the same position gives the same item in a bigger file
    assert items("sciq", rows[:10]) == out[:10]
    assert items("sciq", rows, seed=1) != out


def test_boolq_cosmos_hh_amazon_and_a_user_file():
    [b] = items("boolq", [{"passage": "P", "question": "Q?", "answer": True}])
    assert b == {"row": 0, "text": "Passage: P\nQuestion: Q?", "label": 1}
    [c] = items("cosmos-qa", [{"context": "C", "question": "Q", "answer0": "a",
                               "answer1": "None of the above choices .",
                               "answer2": "c", "answer3": "d", "label": 1}])
    assert c["label"] == 0 and c["text"].startswith("Context: C\nQuestion: Q\nAnswer: ")
    assert c["text"].rsplit(": ", 1)[1] in ("a", "c", "d")  # never the "right" one
    hh = items("anthropic-hh", [{"chosen": " good", "rejected": " bad"}] * 50)
    assert all(i["text"] == ("good" if i["label"] else "bad") for i in hh) and len({i["label"] for i in hh}) == 2
    [a] = items("amazon-polarity", [{"title": "Great", "content": "works", "label": 1}])
    assert a == {"row": 0, "text": "Great works", "label": 1}
    user = items("text-label", [{"review": "x", "stars": "pos"}, {"review": "y", "stars": "neg"}],
                 text_field="review", label_field="stars", positive="pos")
    assert [u["label"] for u in user] == [1, 0]
    rows = [{"text": "x", "label": "true"}, {"text": "y", "label": 0}]
    assert [u["label"] for u in items("text-label", rows)] == [1, 0]


@pytest.mark.parametrize("name, row, message", [
    ("sciq", {"correct_answer": "a"}, "row 0 has no 'question' field"),
    ("boolq", {"passage": "p", "question": "q", "answer": "maybe"}, "row 0 field 'answer' must be"),
    ("text-label", {"text": "t", "label": 3}, "row 0 field 'label' must be 0 or 1"),
    ("text-label", {"label": 1}, "row 0 has no 'text' field"),
    ("amazon-polarity", {"title": "t", "content": "c"}, "row 0 has no 'label' field"),
])
def test_a_row_without_the_needed_field_names_the_row_and_field(name, row, message):
    with pytest.raises(FormatError, match=message) as error:
        items(name, [row])
    assert str(error.value).startswith("f.jsonl: ")


def test_unknown_options_and_answer_texts_are_refused():
    with pytest.raises(ValueError, match="has no option 'text_feild'"):
        dataset_format("text-label", {"text_feild": "x"})
    with pytest.raises(ValueError, match="two different texts"):
        dataset_format("sciq", {"answers": (" yes", " yes")})
    with pytest.raises(KeyError, match="did you mean 'sciq'"):
        dataset_format("sciqq")


def test_balance_downsamples_the_majority_class_by_a_seeded_draw():
    rows = [{"text": f"t{i}", "label": int(i % 4 == 0)} for i in range(100)]  # 25 positive, 75 negative
    out = balance(items("text-label", rows), seed=0)
    assert sum(i["label"] for i in out) == 25 and len(out) == 50
    assert all(i["label"] == 0 for i in items("text-label", rows) if i not in out)  # only the majority drops
    positives = {i["row"] for i in out if i["label"]}
    assert positives == {i for i in range(100) if i % 4 == 0}  # the minority is kept whole
    assert [i["row"] for i in out] == sorted(i["row"] for i in out)  # in file order
    assert out == balance(items("text-label", rows), seed=0)
    assert out != balance(items("text-label", rows), seed=1)
    with pytest.raises(ValueError, match="no item has label 1"):
        balance(items("text-label", [{"text": "a", "label": 0}]), seed=0)


def test_loading_a_fixture_file_through_datasets(tmp_path):
    from w2s_jax.classify.stages_data import Source

    path = tmp_path / "data.csv"
    path.write_text("text,label\nhello,1\nworld,0\n")
    rows = Source(str(path)).rows(0)
    assert items("text-label", rows) == [{"row": 0, "text": "hello", "label": 1},
                                         {"row": 1, "text": "world", "label": 0}]
    (tmp_path / "data.jsonl").write_text(json.dumps({"text": "a", "label": 1}) + "\n")
    assert Source(str(tmp_path / "data.jsonl")).identity() != Source(str(path)).identity()
    assert Source("allenai/sciq", "test").identity() == "hub:allenai/sciq:None:test"
