"""Losses computed a chunk of positions at a time from hidden states equal the full-logits losses,
in value and in gradient, for every path of the built-in losses; other losses get full logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.train import CrossEntropyToTokens, KLToTeacher, loss_from_hidden

B, T, K = 2, 11, 3
CONFIG = ModelConfig.tiny(num_layers=1)  # V=128


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    V = CONFIG.vocab_size
    valid = np.ones((B, T), bool)
    valid[1, 8:] = False
    completion = np.zeros((B, T), bool)
    completion[0, 4:] = True
    completion[1, 3:8] = True
    probs = rng.dirichlet(np.ones(K), size=(B, T)).astype(np.float32)
    probs[0, 2, 1] = 0.0  # a zero teacher probability (the 0 log 0 convention)
    return {
        "tokens_BxT": jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32),
        "positions_BxT": jnp.asarray(np.maximum(np.cumsum(valid, 1) - 1, 0), jnp.int32),
        "valid_BxT": jnp.asarray(valid),
        "completion_mask_BxT": jnp.asarray(completion),
        "teacher_mask_BxT": jnp.asarray(completion),
        "teacher_probs_BxTxC": jnp.asarray(probs),
        "teacher_ids_BxTxC": jnp.asarray(rng.integers(0, V, (B, T, K)), jnp.int32),
        "label_ids_BxC": jnp.asarray(rng.integers(0, V, (B, K)), jnp.int32),
        "dense_probs_BxTxV": jnp.asarray(rng.dirichlet(np.ones(V), size=(B, T)), jnp.float32),
    }


def _select(batch, path):
    keep = {"tokens_BxT", "positions_BxT", "valid_BxT", "completion_mask_BxT", "teacher_mask_BxT"}
    out = {k: v for k, v in batch.items() if k in keep}
    if path == "label_ids":
        out.update(teacher_probs_BxTxC=batch["teacher_probs_BxTxC"], label_ids_BxC=batch["label_ids_BxC"])
    elif path == "teacher_ids":
        out.update(teacher_probs_BxTxC=batch["teacher_probs_BxTxC"], teacher_ids_BxTxC=batch["teacher_ids_BxTxC"])
    elif path == "dense":
        out.update(teacher_probs_BxTxC=batch["dense_probs_BxTxV"])
    return out


def _loss_and_grads(loss_fn, batch, rows_per_chunk, tied=True):
    import dataclasses

    config = dataclasses.replace(CONFIG, tie_word_embeddings=tied)
    graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))

    def loss(params):
        model = nnx.merge(graphdef, params)
        h, _ = model.hidden(batch["tokens_BxT"], positions_BxT=batch["positions_BxT"], valid_BxT=batch["valid_BxT"])
        if rows_per_chunk is None:
            return loss_fn(model.unembed(h), batch)
        return loss_from_hidden(loss_fn, model, h, batch, rows_per_chunk=rows_per_chunk)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), jax.tree.leaves(grads)


@pytest.mark.parametrize("loss_fn, path", [
    (CrossEntropyToTokens(), "tokens"),
    (KLToTeacher(), "dense"),
    (KLToTeacher(kind="cross_entropy"), "label_ids"),
    (KLToTeacher(), "teacher_ids"),
    (KLToTeacher(kind="cross_entropy"), "teacher_ids"),
])
@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_equals_full_logits_loss(loss_fn, path, tied):
    batch = _select(_batch(), path)
    full, full_grads = _loss_and_grads(loss_fn, batch, None, tied)
    # 8 rows per chunk at B=2: C=4 positions, 3 chunks, the last padded with 1 unscored position
    chunked, chunked_grads = _loss_and_grads(loss_fn, batch, 8, tied)
    assert full > 0
    np.testing.assert_allclose(chunked, full, rtol=2e-6)
    assert len(full_grads) == len(chunked_grads)
    for a, b in zip(chunked_grads, full_grads):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-7)
    assert max(float(jnp.abs(g).max()) for g in full_grads) > 1e-3  # gradients are not all ~0


def test_a_custom_loss_gets_the_full_logits():
    seen = []

    def custom(logits_BxTxV, batch):
        seen.append(logits_BxTxV.shape)
        return jnp.mean(logits_BxTxV ** 2)

    batch = _select(_batch(), "tokens")
    full, _ = _loss_and_grads(custom, batch, None)
    chunked, _ = _loss_and_grads(custom, batch, 8)
    assert seen == [(B, T, CONFIG.vocab_size)] * 2
    np.testing.assert_allclose(chunked, full, rtol=1e-6)
