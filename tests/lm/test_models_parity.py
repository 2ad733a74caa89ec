"""Every family against the Hugging Face PyTorch reference, plus cache and masking invariances.

Reference: transformers' `<Family>ForCausalLM` (eager attention, float32) on a left-padded batch,
given the same attention mask and position ids; only valid positions are compared. Tolerance
1e-4 absolute on logits of size ~2: float32 with a different summation order (observed ~1e-6).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import FAMILIES, left_padded_batch, load_hf_torch_model, make_hf_checkpoint
from w2s_jax.models import init_cache, load_pretrained

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")

ATOL = 1e-4
B, T = 3, 10
PROMPT_LEN = 6  # cached test: prefill this many slots, then decode one token at a time


def _batch():
    return left_padded_batch((0, 2, 5), T, vocab_high=40, seed=0)


def _forward(model, tokens_BxT, valid_BxT, positions_BxT):
    logits, cache = model(jnp.asarray(tokens_BxT), positions_BxT=jnp.asarray(positions_BxT),
                          valid_BxT=jnp.asarray(valid_BxT))
    assert cache is None
    return np.asarray(logits)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(family, tied) -> (checkpoint dir, reference logits on the batch)."""
    root = tmp_path_factory.mktemp("hf")
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    out = {}
    for family in FAMILIES:
        for tied in (False, True):
            path = make_hf_checkpoint(root, family, tie_word_embeddings=tied)
            reference = load_hf_torch_model(path)
            with torch.no_grad():
                logits = reference(input_ids=torch.tensor(tokens_BxT),
                                   attention_mask=torch.tensor(valid_BxT.astype(np.int64)),
                                   position_ids=torch.tensor(positions_BxT)).logits.numpy()
            out[family, tied] = (path, logits)
    return out


@pytest.fixture(scope="module")
def models(checkpoints):
    return {key: load_pretrained(path) for key, (path, _) in checkpoints.items()}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_pytorch(family, tied, checkpoints, models):
    model, config = models[family, tied]
    assert config.model_type == family and config.tie_word_embeddings == tied
    assert hasattr(model, "lm_head") != tied
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    logits = _forward(model, tokens_BxT, valid_BxT, positions_BxT)
    reference = checkpoints[family, tied][1]
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    np.testing.assert_allclose(logits[valid_BxT], reference[valid_BxT], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_sliding_window_is_exercised(family, checkpoints, models):
    """Dropping the window changes logits, so the parity test above does check the window."""
    model, config = models[family, False]
    assert config.sliding_window is not None and config.sliding_window < T
    unwindowed = nnx.clone(model)
    unwindowed.config = dataclasses.replace(config, sliding_window=None, sliding_layers=())
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    logits = _forward(unwindowed, tokens_BxT, valid_BxT, positions_BxT)
    reference = checkpoints[family, False][1]
    assert np.abs(logits[valid_BxT] - reference[valid_BxT]).max() > 100 * ATOL


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "per-layer"])
@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_prefill_over_key_blocks_matches_uncached(family, stacked, models, monkeypatch):
    """Prefill in chunks of 3 tokens with the cached slots read in blocks of 4 (the online softmax
    over blocks: 0, 1 and 2 blocks, the last one partly written), then one decode step: the same
    logits as one full pass, left padding and sliding windows included, in both cache layouts."""
    from w2s_jax.models import cached_attention

    monkeypatch.setattr(cached_attention, "PREFILL_KEY_BLOCK", 4)
    model, config = models[family, False]
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    full = _forward(model, tokens_BxT, valid_BxT, positions_BxT)
    cache = init_cache(config, batch_size=B, max_len=12, stacked=stacked)  # 3 blocks of 4 slots
    step = nnx.jit(lambda m, tok, pos, val, c: m(tok, positions_BxT=pos, valid_BxT=val, cache=c))
    pieces = []
    for start, stop in ((0, 3), (3, 6), (6, 9), (9, 10)):
        logits, cache = step(model, tokens_BxT[:, start:stop], positions_BxT[:, start:stop],
                             valid_BxT[:, start:stop], cache)
        pieces.append(np.asarray(logits))
    cached = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(cached[valid_BxT], full[valid_BxT], atol=ATOL, rtol=0)


def _last_only_matches_full_pass(model, config, stacked: bool) -> None:
    """`hidden(last_only=True)` against `hidden()` on the test batch: without a cache, and over
    the chunks of the test above (cached slots read in blocks), where both must also leave the
    same cache (the next chunk reads it). Compared where a chunk's last slot is a real token."""
    tokens_BxT, valid_BxT, positions_BxT = (jnp.asarray(x) for x in _batch())
    hidden = nnx.jit(lambda m, tok, pos, val, c, last: m.hidden(tok, positions_BxT=pos, valid_BxT=val, cache=c,
                                                                last_only=last), static_argnums=5)
    full, _ = hidden(model, tokens_BxT, positions_BxT, valid_BxT, None, False)
    last, _ = hidden(model, tokens_BxT, positions_BxT, valid_BxT, None, True)
    assert last.shape == (B, 1, config.hidden_size)
    np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, -1]), atol=1e-5, rtol=0)
    caches = {flag: init_cache(config, batch_size=B, max_len=12, stacked=stacked) for flag in (False, True)}
    for start, stop in ((0, 3), (3, 6), (6, 9), (9, 10)):
        out = {}
        for last_only, cache in caches.items():
            out[last_only], caches[last_only] = hidden(model, tokens_BxT[:, start:stop], positions_BxT[:, start:stop],
                                                       valid_BxT[:, start:stop], cache, last_only)
        real = np.asarray(valid_BxT[:, stop - 1])
        assert real.any()
        np.testing.assert_allclose(np.asarray(out[True][:, 0])[real], np.asarray(out[False][:, -1])[real],
                                   atol=1e-5, rtol=0)
        for a, b in zip(jax.tree.leaves(caches[False]), jax.tree.leaves(caches[True])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "per-layer"])
@pytest.mark.parametrize("family", FAMILIES)
def test_last_slot_only_prefill_matches_the_full_pass(family, stacked, models, monkeypatch):
    """Generation's prefill forms the last layer's queries, attention and MLP for the last slot
    only (`Transformer.hidden(last_only=True)`): the same output there, and the same cache, as
    the full pass, left padding and sliding windows (Mistral's on its last layer) included."""
    from w2s_jax.models import cached_attention

    monkeypatch.setattr(cached_attention, "PREFILL_KEY_BLOCK", 4)
    model, config = models[family, False]
    _last_only_matches_full_pass(model, config, stacked)


def test_last_slot_only_prefill_of_a_one_layer_model(monkeypatch):
    """With one layer, the only layer is the last one."""
    from w2s_jax.models import Transformer, cached_attention
    from w2s_jax.models.config import ModelConfig

    monkeypatch.setattr(cached_attention, "PREFILL_KEY_BLOCK", 4)
    config = ModelConfig.tiny("qwen3", num_layers=1, vocab_size=48)
    _last_only_matches_full_pass(Transformer(config, rngs=nnx.Rngs(3)), config, stacked=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_matches_uncached(family, models):
    """Prefill PROMPT_LEN slots, then feed one token at a time: same logits as one full pass."""
    model, config = models[family, False]
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    full = _forward(model, tokens_BxT, valid_BxT, positions_BxT)
    cache = init_cache(config, batch_size=B, max_len=T + 2)
    step = nnx.jit(lambda m, tok, pos, val, c: m(tok, positions_BxT=pos, valid_BxT=val, cache=c))
    logits, cache = step(model, tokens_BxT[:, :PROMPT_LEN], positions_BxT[:, :PROMPT_LEN],
                         valid_BxT[:, :PROMPT_LEN], cache)
    assert int(cache.index) == PROMPT_LEN
    pieces = [np.asarray(logits)]
    for t in range(PROMPT_LEN, T):
        logits, cache = step(model, tokens_BxT[:, t:t + 1], positions_BxT[:, t:t + 1], valid_BxT[:, t:t + 1], cache)
        pieces.append(np.asarray(logits))
    assert int(cache.index) == T
    cached = np.concatenate(pieces, axis=1)
    np.testing.assert_allclose(cached[valid_BxT], full[valid_BxT], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(cache.valid_BxS)[:, :T], valid_BxT)
    assert not np.asarray(cache.valid_BxS)[:, T:].any()


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_and_padding_masking(family, models):
    """Changing a future token or a padding token leaves every other valid position unchanged."""
    model, _ = models[family, False]
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    base = _forward(model, tokens_BxT, valid_BxT, positions_BxT)
    changed = tokens_BxT.copy()
    changed[:, 7] = 41  # a future token for positions < 7
    changed[~valid_BxT] = 17  # padding content
    logits = _forward(model, changed, valid_BxT, positions_BxT)
    earlier = valid_BxT.copy()
    earlier[:, 7:] = False
    np.testing.assert_allclose(logits[earlier], base[earlier], atol=1e-6, rtol=0)
    assert np.abs(logits[:, 7] - base[:, 7]).max() > 1e-3  # the change itself is visible


def test_forward_compiles_once_per_shape(models):
    model, config = models["llama", False]
    traces = []

    @nnx.jit
    def forward(m, tokens_BxT, positions_BxT, valid_BxT):
        traces.append(1)
        return m(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT)[0]

    tokens_BxT, valid_BxT, positions_BxT = _batch()
    for shift in range(3):
        forward(model, jnp.asarray((tokens_BxT + shift) % config.vocab_size), jnp.asarray(positions_BxT),
                jnp.asarray(valid_BxT))
    assert len(traces) == 1


def test_bfloat16_parameters_and_activations(checkpoints):
    path, reference = checkpoints["gemma2", False]
    model, _ = load_pretrained(path, dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert params and all(p.dtype == jnp.bfloat16 for p in params)
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    logits = _forward(model, tokens_BxT, valid_BxT, positions_BxT)
    assert logits.dtype == np.float32
    # bfloat16 has 8 mantissa bits (relative error 2**-8 per rounding, a few dozen roundings deep).
    np.testing.assert_allclose(logits[valid_BxT], reference[valid_BxT], atol=0.15, rtol=0)
    mixed, _ = load_pretrained(path, dtype=jnp.float32, param_dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(nnx.state(mixed, nnx.Param)))
    assert _forward(mixed, tokens_BxT, valid_BxT, positions_BxT).dtype == np.float32


def test_bfloat16_checkpoint_file_loads_exactly(tmp_path):
    """A checkpoint stored in bfloat16 (safetensors BF16) loads bit-exactly into float32 parameters."""
    path = make_hf_checkpoint(tmp_path, "qwen2", num_hidden_layers=1)
    reference = load_hf_torch_model(path).to(torch.bfloat16)
    reference.save_pretrained(str(tmp_path / "bf16"))
    model, _ = load_pretrained(tmp_path / "bf16", dtype=jnp.float32)
    ours = np.asarray(model.embedding[...])
    theirs = reference.model.embed_tokens.weight.detach().to(torch.float32).numpy()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("family,overrides", [
    ("llama", dict(attention_bias=True, mlp_bias=True, rope_parameters=dict(rope_type="linear", rope_theta=500.0,
                                                                            factor=3.0))),
    ("qwen3", dict(attention_bias=True, use_sliding_window=True, sliding_window=3, max_window_layers=1)),
])
def test_optional_features_match_pytorch(tmp_path, family, overrides):
    """Llama attention/MLP biases with linear RoPE; Qwen3 biases with a sliding window on layer 1."""
    path = make_hf_checkpoint(tmp_path, family, **overrides)
    model, config = load_pretrained(path)
    assert config.qkv_bias and config.o_bias
    assert config.mlp_bias == (family == "llama")
    assert config.sliding_layers == ((1,) if family == "qwen3" else ())
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    with torch.no_grad():
        reference = load_hf_torch_model(path)(input_ids=torch.tensor(tokens_BxT),
                                              attention_mask=torch.tensor(valid_BxT.astype(np.int64)),
                                              position_ids=torch.tensor(positions_BxT)).logits.numpy()
    logits = _forward(model, tokens_BxT, valid_BxT, positions_BxT)
    np.testing.assert_allclose(logits[valid_BxT], reference[valid_BxT], atol=ATOL, rtol=0)


def test_cache_too_small_is_refused(models):
    model, config = models["llama", False]
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    with pytest.raises(ValueError, match="max_len=4"):
        model(jnp.asarray(tokens_BxT), positions_BxT=jnp.asarray(positions_BxT), valid_BxT=jnp.asarray(valid_BxT),
              cache=init_cache(config, batch_size=B, max_len=4))
