"""The SFT dataset, the config, the losses and the schedule, against hand-computed references."""

import dataclasses

import numpy as np
import pytest

from w2s_jax.train import (
    CrossEntropyToTokens,
    KLToTeacher,
    SFTDataset,
    TrainConfig,
    learning_rate_schedule,
)


class CharTokenizer:
    """One token per character (ids 3..98); bos 1, eos 2."""

    bos_token_id = 1
    eos_token_id = 2

    def encode(self, text, add_special_tokens=False):
        return [3 + ord(c) % 96 for c in text]


ROWS = [{"prompt": f"p{i}", "completion": "xy"[: 1 + i % 2]} for i in range(10)]


def test_empty_dataset_and_missing_fields_are_errors():
    with pytest.raises(ValueError, match="empty dataset"):
        SFTDataset([], CharTokenizer(), max_len=8)
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "a", "answer": "b"}]
    with pytest.raises(KeyError, match="row 1 has no 'completion' field"):
        SFTDataset(rows, CharTokenizer(), max_len=8)
    with pytest.raises(KeyError, match="row 0 has no 'prompt' field"):
        SFTDataset([{"completion": "b"}], CharTokenizer(), max_len=8)
    with pytest.raises(ValueError, match="row 0: completion has 9 tokens"):
        SFTDataset([{"prompt": "a", "completion": "b" * 8}], CharTokenizer(), max_len=8)


def test_collate_left_pads_and_masks_completion():
    data = SFTDataset([{"prompt": "ab", "completion": "c"}, {"prompt": "abcdefgh", "completion": "cd"}],
                      CharTokenizer(), max_len=8)
    batch = data.collate([0, 1])
    a, b, c, d = (3 + ord(ch) % 96 for ch in "abcd")
    # row 0: [bos a b] + [c eos] right-aligned in 8 slots
    np.testing.assert_array_equal(batch["tokens_BxT"][0], [0, 0, 0, 1, a, b, c, 2])
    np.testing.assert_array_equal(batch["valid_BxT"][0], [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(batch["positions_BxT"][0], [0, 0, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(batch["completion_mask_BxT"][0], [0, 0, 0, 0, 0, 0, 1, 1])
    # row 1 is too long: the prompt loses tokens on the left, the completion [c d eos] is kept
    np.testing.assert_array_equal(batch["tokens_BxT"][1, -3:], [c, d, 2])
    assert batch["valid_BxT"][1].all() and batch["completion_mask_BxT"][1].sum() == 3


def test_batch_order_is_deterministic_resumable_and_covers_each_epoch():
    data = SFTDataset(ROWS, CharTokenizer(), max_len=8, seed=3)
    stream = data.iterate(4)
    first = [next(stream) for _ in range(5)]
    resumed = next(data.iterate(4, start=3))
    for key in first[3]:
        np.testing.assert_array_equal(resumed[key], first[3][key])
    again = SFTDataset(ROWS, CharTokenizer(), max_len=8, seed=3).batch(1, 4)
    np.testing.assert_array_equal(again["tokens_BxT"], first[1]["tokens_BxT"])
    epoch0 = np.concatenate([b["tokens_BxT"] for b in first[:2]])
    assert len({tuple(r) for r in epoch0}) == 8  # 2 full batches of 4 distinct rows per epoch
    other_seed = SFTDataset(ROWS, CharTokenizer(), max_len=8, seed=4).batch(0, 4)
    assert not np.array_equal(other_seed["tokens_BxT"], first[0]["tokens_BxT"])


def test_eval_batches_cover_every_row_once_and_mask_filler():
    data = SFTDataset(ROWS, CharTokenizer(), max_len=8)
    batches = list(data.eval_batches(4))
    assert [real for _, real in batches] == [4, 4, 2]
    last, _ = batches[-1]
    assert not last["completion_mask_BxT"][2:].any() and last["completion_mask_BxT"][:2].any()


def test_teacher_probs_are_aligned_with_the_logits_that_predict_completion_tokens():
    rows = [{"prompt": "ab", "completion": "c", "teacher_probs": [0.25, 0.75]}]
    data = SFTDataset(rows, CharTokenizer(), max_len=6, add_eos=False, label_ids=[10, 11])
    batch = data.collate([0])
    # tokens: [pad pad bos a b c]; the completion token c (slot 5) is predicted at slot 4
    np.testing.assert_array_equal(batch["teacher_mask_BxT"][0], [0, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(batch["teacher_probs_BxTxC"][0, 4], [0.25, 0.75])
    np.testing.assert_array_equal(batch["label_ids_BxC"], [[10, 11]])
    with pytest.raises(ValueError, match="label_ids has 3 tokens"):
        SFTDataset(rows, CharTokenizer(), max_len=6, label_ids=[1, 2, 3])


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_to_tokens_matches_numpy():
    rng = np.random.default_rng(0)
    data = SFTDataset(ROWS[:4], CharTokenizer(), max_len=8)
    batch = data.collate(range(4))
    logits = rng.normal(size=(4, 8, 100)).astype(np.float32)
    logp = _log_softmax(logits.astype(np.float64))
    total, count = 0.0, 0
    for b in range(4):
        for t in range(7):
            if batch["completion_mask_BxT"][b, t + 1]:
                total -= logp[b, t, batch["tokens_BxT"][b, t + 1]]
                count += 1
    expected = total / count
    np.testing.assert_allclose(float(CrossEntropyToTokens()(logits, batch)), expected, rtol=1e-5)


def test_kl_to_teacher_over_a_label_set_matches_numpy_and_vanishes_at_the_teacher():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=4)
    rows = [{"prompt": f"q{i}", "completion": "a", "teacher_probs": probs[i]} for i in range(4)]
    data = SFTDataset(rows, CharTokenizer(), max_len=6, add_eos=False, label_ids=[5, 9, 7])
    batch = data.collate(range(4))
    logits = rng.normal(size=(4, 6, 100)).astype(np.float32)
    t = 4  # every row: [pad bos q i a] -> completion at slot 5 predicted at slot 4
    log_q = _log_softmax(logits[:, t, [5, 9, 7]].astype(np.float64))
    kl = np.mean(np.sum(probs * (np.log(probs) - log_q), axis=-1))
    ce = np.mean(-np.sum(probs * log_q, axis=-1))
    np.testing.assert_allclose(float(KLToTeacher()(logits, batch)), kl, rtol=1e-5)
    np.testing.assert_allclose(float(KLToTeacher("cross_entropy")(logits, batch)), ce, rtol=1e-5)
    at_teacher = logits.copy()
    at_teacher[:, t, [5, 9, 7]] = np.log(probs)
    assert abs(float(KLToTeacher()(at_teacher, batch))) < 1e-6
    with pytest.raises(ValueError, match="'js'"):
        KLToTeacher("js")


def _top_k_rows():
    """Two rows with per-token teacher ids: 2 and 1 completion tokens, k = 3."""
    return [
        {"prompt": "ab", "completion": "cd", "teacher_ids": [[7, 40, 9], [11, 5, 60]],
         "teacher_probs": [[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]]},
        {"prompt": "abcd", "completion": "e", "teacher_ids": [[3, 4, 5]],
         "teacher_probs": [[1 / 3, 1 / 3, 1 / 3]]},
    ]


def test_teacher_ids_are_collated_at_the_logits_that_predict_each_completion_token():
    data = SFTDataset(_top_k_rows(), CharTokenizer(), max_len=8)
    batch = data.collate([0, 1])
    assert batch["teacher_ids_BxTxC"].shape == batch["teacher_probs_BxTxC"].shape == (2, 8, 3)
    assert batch["teacher_ids_BxTxC"].dtype == np.int32 and "label_ids_BxC" not in batch
    # row 0: [pad pad bos a b c d eos]; c (slot 5) is predicted at slot 4, d (slot 6) at slot 5
    np.testing.assert_array_equal(batch["teacher_mask_BxT"][0], [0, 0, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch["teacher_ids_BxTxC"][0, 4:6], [[7, 40, 9], [11, 5, 60]])
    np.testing.assert_allclose(batch["teacher_probs_BxTxC"][0, 4:6], [[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]])
    # row 1: [pad bos a b c d e eos]; e (slot 6) is predicted at slot 5
    np.testing.assert_array_equal(batch["teacher_mask_BxT"][1], [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(batch["teacher_ids_BxTxC"][1, 5], [3, 4, 5])
    assert not batch["teacher_ids_BxTxC"][~batch["teacher_mask_BxT"]].any()


def test_teacher_ids_enter_the_fingerprint_and_bad_ids_are_refused():
    rows = _top_k_rows()
    other = [dict(rows[0], teacher_ids=[[7, 40, 9], [11, 5, 61]]), rows[1]]
    base = SFTDataset(rows, CharTokenizer(), max_len=8).fingerprint()
    assert SFTDataset(rows, CharTokenizer(), max_len=8).fingerprint() == base
    assert SFTDataset(other, CharTokenizer(), max_len=8).fingerprint() != base
    without_ids = [{k: v for k, v in row.items() if k != "teacher_ids"} for row in rows]
    assert SFTDataset(without_ids, CharTokenizer(), max_len=8).fingerprint() != base
    with pytest.raises(ValueError, match="either every row or no row must have 'teacher_ids'"):
        SFTDataset([rows[0], without_ids[1]], CharTokenizer(), max_len=8)
    with pytest.raises(ValueError, match=r"row 1: teacher_ids of shape \(1, 2\)"):
        SFTDataset([rows[0], dict(rows[1], teacher_ids=[[3, 4]])], CharTokenizer(), max_len=8)
    with pytest.raises(ValueError, match="row 0: teacher_ids must be non-negative"):
        SFTDataset([dict(rows[0], teacher_ids=[[7, -1, 9], [1, 2, 3]])], CharTokenizer(), max_len=8)
    with pytest.raises(ValueError, match="do not also pass label_ids"):
        SFTDataset(rows, CharTokenizer(), max_len=8, label_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="row 0 has 'teacher_ids' but no 'teacher_probs'"):
        SFTDataset([{"prompt": "a", "completion": "b", "teacher_ids": [[1]]}], CharTokenizer(), max_len=8)


def test_kl_to_teacher_at_teacher_ids_matches_numpy_with_a_finite_gradient():
    import jax

    rng = np.random.default_rng(2)
    data = SFTDataset(_top_k_rows(), CharTokenizer(), max_len=8)
    batch = data.collate([0, 1])
    logits = rng.normal(size=(2, 8, 100)).astype(np.float32)
    log_q = _log_softmax(logits.astype(np.float64))  # the student's FULL-vocabulary distribution
    kl = ce = 0.0
    targets = [(0, 4, [7, 40, 9], [0.5, 0.3, 0.2]), (0, 5, [11, 5, 60], [0.6, 0.4, 0.0]),
               (1, 5, [3, 4, 5], [1 / 3] * 3)]
    for b, t, ids, probs in targets:
        for token, p in zip(ids, probs):
            if p > 0:
                kl += p * (np.log(p) - log_q[b, t, token])
                ce -= p * log_q[b, t, token]
    np.testing.assert_allclose(float(KLToTeacher()(logits, batch)), kl / 3, rtol=1e-5)
    np.testing.assert_allclose(float(KLToTeacher("cross_entropy")(logits, batch)), ce / 3, rtol=1e-5)
    grad = np.asarray(jax.grad(lambda z: KLToTeacher()(z, batch))(logits))
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    # only the three scored positions get a gradient, over the whole vocabulary (mass moves there)
    assert set(zip(*np.nonzero(np.abs(grad).sum(-1)))) == {(0, 4), (0, 5), (1, 5)}
    # at the optimum the student's full distribution IS the teacher's top-k: KL is 0
    at_teacher = np.full_like(logits, -1e4)
    for b, t, ids, probs in targets:
        at_teacher[b, t, ids] = np.log(np.maximum(probs, 1e-30))
    assert abs(float(KLToTeacher()(at_teacher, batch))) < 1e-5


def test_config_validation_names_bad_values():
    cfg = TrainConfig.tiny()
    with pytest.raises(ValueError, match="batch_size=8 is not divisible by grad_accum_steps=3"):
        dataclasses.replace(cfg, grad_accum_steps=3)
    with pytest.raises(ValueError, match="compute_dtype.*'float16'"):
        dataclasses.replace(cfg, compute_dtype="float16")
    with pytest.raises(ValueError, match="learning_rate must be > 0, got -1"):
        dataclasses.replace(cfg, learning_rate=-1)
    with pytest.raises(ValueError, match="warmup_steps=6 must be < total_steps=6"):
        dataclasses.replace(cfg, warmup_steps=6)
    with pytest.raises(ValueError, match="lora_rank must be a positive int, got 0"):
        dataclasses.replace(cfg, lora_rank=0)


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    cfg = dataclasses.replace(TrainConfig.tiny(), learning_rate=1.0, warmup_steps=4, total_steps=20,
                              end_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 2, 4)], [0.0, 0.5, 1.0], atol=1e-7)
    # cosine from 1 to 0.1 over the 16 post-warmup steps: halfway is 0.55
    np.testing.assert_allclose(float(lr(12)), 0.1 + 0.9 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(lr(20)), 0.1, rtol=1e-6)
