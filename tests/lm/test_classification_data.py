"""The classification dataset against hand-built batches: layout, truncation, errors naming the row,
order, evaluation batches, fingerprints; and the loss it feeds against a hand computation."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from tests.lm.test_train_data import CharTokenizer
from w2s_jax.train import ClassificationDataset, KLToTeacher, classification_tokens
from w2s_jax.train.losses import num_scored


def _ids(text):
    return [3 + ord(c) % 96 for c in text]


ROWS = [{"text": f"t{i}" + "x" * (i % 3), "soft_label": i / 9} for i in range(10)]


def test_collate_left_pads_with_the_soft_label_at_the_last_position():
    data = ClassificationDataset([{"text": "ab", "soft_label": 0.25}, {"text": "abcdefghij", "soft_label": 1}],
                                 CharTokenizer(), max_len=6)
    batch = data.collate([0, 1])
    assert sorted(batch) == ["positions_BxT", "teacher_mask_BxT", "teacher_probs_BxTxC", "tokens_BxT", "valid_BxT"]
    # row 0: [bos a b] right-aligned in 6 slots
    np.testing.assert_array_equal(batch["tokens_BxT"][0], [0, 0, 0, 1, *_ids("ab")])
    np.testing.assert_array_equal(batch["valid_BxT"][0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(batch["positions_BxT"][0], [0, 0, 0, 0, 1, 2])
    # row 1 is too long: it keeps its last 6 tokens (the end of the text, where the head reads)
    np.testing.assert_array_equal(batch["tokens_BxT"][1], _ids("efghij"))
    assert batch["valid_BxT"][1].all()
    expected_probs = np.zeros((2, 6, 2), np.float32)
    expected_probs[:, -1] = [[0.75, 0.25], [0.0, 1.0]]
    np.testing.assert_array_equal(batch["teacher_probs_BxTxC"], expected_probs)
    np.testing.assert_array_equal(batch["teacher_mask_BxT"], [[0] * 5 + [1]] * 2)
    assert batch["tokens_BxT"].dtype == batch["positions_BxT"].dtype == np.int32
    assert batch["teacher_probs_BxTxC"].dtype == np.float32
    np.testing.assert_array_equal(data.labels, [0.25, 1.0])


def test_without_bos_and_with_custom_fields():
    data = ClassificationDataset([{"q": "ab", "y": 0}], CharTokenizer(), max_len=4, text_field="q",
                                 label_field="y", add_bos=False, pad_id=7)
    np.testing.assert_array_equal(data.collate([0])["tokens_BxT"][0], [7, 7, *_ids("ab")])
    assert classification_tokens(CharTokenizer(), "ab", max_len=2) == _ids("ab")  # BOS cut first


def test_soft_label_cross_entropy_on_a_batch_equals_the_hand_computation():
    data = ClassificationDataset(ROWS[:4], CharTokenizer(), max_len=6)
    batch = data.collate(range(4))
    rng = np.random.default_rng(0)
    logits_BxTxC = rng.normal(size=(4, 6, 2)).astype(np.float32)
    loss = float(KLToTeacher(kind="cross_entropy")(jnp.asarray(logits_BxTxC), batch))
    expected = 0.0
    for b, p in enumerate(data.labels):
        z0, z1 = logits_BxTxC[b, -1].astype(np.float64)
        log_q1 = z1 - math.log(math.exp(z0) + math.exp(z1))
        log_q0 = z0 - math.log(math.exp(z0) + math.exp(z1))
        expected -= p * log_q1 + (1 - p) * log_q0
    assert loss == pytest.approx(expected / 4, rel=1e-6)
    assert int(num_scored(batch)) == 4  # one position per example


@pytest.mark.parametrize("row, message", [
    ({"soft_label": 1.0}, "row 1 has no 'text' field"),
    ({"text": "ab"}, "row 1 has no 'soft_label' field"),
    ({"text": "ab", "soft_label": 1.5}, r"row 1: 'soft_label' must be a probability in \[0, 1\], got 1.5"),
    ({"text": "ab", "soft_label": -0.1}, "row 1: 'soft_label' must be a probability"),
    ({"text": "ab", "soft_label": float("nan")}, "row 1: 'soft_label' must be a probability.*nan"),
    ({"text": "ab", "soft_label": "1"}, "row 1: 'soft_label' must be a probability"),
    ({"text": "ab", "soft_label": None}, "row 1: 'soft_label' must be a probability"),
    ({"text": 3, "soft_label": 1.0}, "row 1: 'text' must be a str, got int"),
    ({"text": "", "soft_label": 1.0}, "row 1: 'text' gives no tokens"),
    ("ab", "row 1 is a str, not a mapping"),
])
def test_bad_rows_are_errors_naming_the_row(row, message):
    with pytest.raises(ValueError, match=message):
        ClassificationDataset([{"text": "ok", "soft_label": 0.0}, row], CharTokenizer(), max_len=8)


def test_empty_data_and_bad_max_len_are_errors():
    with pytest.raises(ValueError, match="empty dataset"):
        ClassificationDataset([], CharTokenizer(), max_len=8)
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        ClassificationDataset(ROWS, CharTokenizer(), max_len=0)


def test_batch_order_is_deterministic_resumable_and_covers_each_epoch():
    data = ClassificationDataset(ROWS, CharTokenizer(), max_len=8, seed=3)
    stream = data.iterate(4)
    first = [next(stream) for _ in range(5)]
    resumed = list(zip(range(2), data.iterate(4, start=3)))
    for (_, a), b in zip(resumed, first[3:]):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert data.batches_per_epoch(4) == 2
    # one epoch (2 batches of 4) draws 8 distinct rows
    labels = np.concatenate([b["teacher_probs_BxTxC"][:, -1, 1] for b in first[:2]])
    assert len(set(labels.tolist())) == 8 and set(labels.tolist()) <= set(data.labels.tolist())
    with pytest.raises(ValueError, match="batch_size=11 exceeds the dataset size 10"):
        data.batch(0, 11)


def test_eval_batches_cover_every_row_once_and_mask_the_filler():
    data = ClassificationDataset(ROWS, CharTokenizer(), max_len=8)
    batches = list(data.eval_batches(4))
    assert [real for _, real in batches] == [4, 4, 2]
    last, _ = batches[-1]
    np.testing.assert_array_equal(last["teacher_mask_BxT"][:, -1], [1, 1, 0, 0])
    seen = np.concatenate([b["teacher_probs_BxTxC"][:real, -1, 1] for b, real in batches])
    np.testing.assert_array_equal(seen, data.labels)


class ShiftedTokenizer(CharTokenizer):
    def encode(self, text, add_special_tokens=False):
        return [4 + ord(c) % 96 for c in text]


def test_fingerprint_covers_texts_labels_tokenizer_and_settings():
    def fingerprint(rows=ROWS, tokenizer=CharTokenizer(), **kw):
        return ClassificationDataset(rows, tokenizer, **{"max_len": 8, **kw}).fingerprint()

    base = fingerprint()
    assert fingerprint() == base
    other_label = [dict(r) for r in ROWS]
    other_label[3]["soft_label"] = 0.5
    other_text = [dict(r) for r in ROWS]
    other_text[3]["text"] = "t3y"
    variants = [fingerprint(other_label), fingerprint(other_text), fingerprint(tokenizer=ShiftedTokenizer()),
                fingerprint(max_len=7), fingerprint(seed=1), fingerprint(pad_id=5), fingerprint(ROWS[:9]),
                fingerprint(add_bos=False)]
    assert len({base, *variants}) == len(variants) + 1
