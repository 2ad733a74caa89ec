"""Gradients of the training loss against the Hugging Face PyTorch reference, per parameter.

The forward pass is checked in test_models_parity.py; this checks the backward pass, which is
where our hand-written derivatives live (the output-form softmax JVP, the tied LM head's VJP,
the barrier on the transposed keys; see w2s_jax/models/layers.py). Loss: mean next-token
cross-entropy over valid positions of a left-padded batch, the SFT loss. Our gradient for each
parameter is mapped to the HF name and layout with the same table the checkpoint export uses, and
compared with `torch.autograd` on `<Family>ForCausalLM` (eager attention, float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.lm.hf_fixtures import left_padded_batch, load_hf_torch_model, make_hf_checkpoint
from w2s_jax.models import load_pretrained
from w2s_jax.models.convert import tensor_maps

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")

T = 12


def _batch():
    tokens_BxT, valid_BxT, positions_BxT = left_padded_batch((0, 3, 6), T, vocab_high=90, seed=1)
    # a target counts when both it and the position predicting it are real tokens
    return tokens_BxT, valid_BxT, positions_BxT, valid_BxT[:, 1:] & valid_BxT[:, :-1]


def _torch_grads(path, tokens_BxT, valid_BxT, positions_BxT, target_Bx1T):
    reference = load_hf_torch_model(path)
    logits = reference(input_ids=torch.tensor(tokens_BxT), attention_mask=torch.tensor(valid_BxT.astype(np.int64)),
                       position_ids=torch.tensor(positions_BxT)).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), torch.tensor(tokens_BxT[:, 1:]),
                                            reduction="none")
    mask = torch.tensor(target_Bx1T, dtype=nll.dtype)
    loss = (nll * mask).sum() / mask.sum()
    loss.backward()
    return float(loss.detach()), {name: p.grad.numpy() for name, p in reference.named_parameters()}


def _our_grads(path, tokens_BxT, valid_BxT, positions_BxT, target_Bx1T):
    model, config = load_pretrained(path, layout="stacked")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        logits_BxTxV, _ = nnx.merge(graphdef, params, rest)(
            jnp.asarray(tokens_BxT), positions_BxT=jnp.asarray(positions_BxT), valid_BxT=jnp.asarray(valid_BxT))
        nll = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV[:, :-1], jnp.asarray(tokens_BxT[:, 1:]))
        mask = jnp.asarray(target_Bx1T, nll.dtype)
        return jnp.sum(nll * mask) / jnp.sum(mask)

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    flat = dict(nnx.to_flat_state(grads))
    return float(loss), {m.hf_name: m.to_hf(np.asarray(flat[m.path].get_value())) for m in tensor_maps(config)}


@pytest.mark.parametrize(
    "family,tied", [("llama", False), ("llama", True), ("qwen3", False), ("gemma2", True), ("mistral", False)]
)
def test_gradients_match_pytorch(family, tied, tmp_path):
    path = make_hf_checkpoint(tmp_path, family, tie_word_embeddings=tied)
    batch = _batch()
    ref_loss, ref = _torch_grads(path, *batch)
    loss, ours = _our_grads(path, *batch)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    if tied:  # transformers reports the tied matrix once, under the embedding's name
        assert "lm_head.weight" not in ours
    assert set(ours) == {n for n in ref if not (tied and n == "lm_head.weight")}
    for name, g_ref in ref.items():
        if name not in ours:
            continue
        scale = max(float(np.abs(g_ref).max()), 1e-3)
        err = float(np.abs(ours[name] - g_ref).max())
        assert err <= 2e-5 * scale, f"{family} {name}: max |ours - torch| = {err:.3g} (max |grad| {scale:.3g})"
        assert np.abs(g_ref).max() > 0 or name.endswith("bias"), f"{name}: the reference gradient is all zero"
