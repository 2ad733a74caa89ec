"""Fingerprints of the programs a backend runs, to show that a change left them alone.

Lowers, for `benchmarks/lm_bench.py`'s small Llama config (float32 and bfloat16): the forward
pass, its gradient, and generation's prefill and decode programs (batch 8, 128 slots, the
backend's inference layout), and prints the SHA-1 of each program's StableHLO text (source
locations removed) with its length. Run it at two commits and compare the lines: equal hashes
mean the same program, so a timing difference between the commits is the machine's.

    python benchmarks/program_hashes.py                 # the programs of this host's backend
    python benchmarks/program_hashes.py --platform cuda  # lowered for a GPU from this host

(Lowering for cuda in bfloat16 asks the installed cuDNN for its version: on a host without one,
the bfloat16 prefill raises "cuDNN is not detected".)
"""

from __future__ import annotations

import argparse
import hashlib
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.inference import Greedy, generation
from w2s_jax.inference.prefill import CacheSpec
from w2s_jax.models import ModelConfig, Transformer, to_layout
try:
    from w2s_jax.models.backend import for_platform
except ImportError:  # a commit before the backend module: its programs were the CPU's
    for_platform = None

SMALL = dict(model_type="llama", vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4,
             head_dim=32, intermediate_size=688, tie_word_embeddings=True, bos_token_id=1, eos_token_ids=(2,),
             pad_token_id=0)


def _fingerprint(lowered) -> str:
    text = re.sub(r"loc\(.*?\)", "", lowered.as_text(debug_info=False))
    return f"{hashlib.sha1(text.encode()).hexdigest()[:12]} ({len(text)} chars)"


def fingerprints(platform: str = "cpu", *, batch: int = 8, slots: int = 128) -> dict[str, str]:
    """Program name -> fingerprint, for the small config lowered for `platform`."""
    if for_platform is None and platform != "cpu":
        raise SystemExit("this commit predates w2s_jax.models.backend: only --platform cpu")
    backend = for_platform(platform) if for_platform else None
    config, out = ModelConfig(**SMALL), {}
    per_layer = backend.layout == "per_layer" if backend else True
    whole = backend.prefill == "whole" if backend else False
    lower = lambda traced: traced.lower(lowering_platforms=(platform,))  # noqa: E731
    for dtype in (jnp.float32, jnp.bfloat16):
        name = jnp.dtype(dtype).name
        chosen = {"backend": backend} if backend else {}
        model = Transformer(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype, **chosen)
        graphdef, state = nnx.split(model)
        tokens, valid = jnp.ones((batch, slots), jnp.int32), jnp.ones((batch, slots), bool)
        positions = jnp.broadcast_to(jnp.arange(slots), (batch, slots))

        def loss(state):
            logits, _ = nnx.merge(graphdef, state)(tokens, positions_BxT=positions, valid_BxT=valid)
            return logits.astype(jnp.float32).mean()

        out[f"forward {name}"] = _fingerprint(lower(jax.jit(loss).trace(state)))
        out[f"gradient {name}"] = _fingerprint(lower(jax.jit(jax.grad(loss)).trace(state)))
        if per_layer:
            graphdef, state = nnx.split(to_layout(model, "per_layer"))
        args = (graphdef, state, tokens, valid, None if whole else np.asarray(2, np.int32), jnp.ones(batch, bool),
                jax.random.key(0), jnp.arange(batch, dtype=jnp.int32))
        kw = dict(sampler=Greedy(), eos_ids=(2,), num_new=32, chunk=32 if whole else 16,
                  cache_spec=CacheSpec(config, batch, slots, jnp.dtype(dtype), None))
        prefill = generation._prefill.trace(*args, **kw)
        decode = generation._decode.trace(graphdef, state, prefill.out_info, np.asarray(4, np.int32), args[6],
                                          args[7], sampler=Greedy(), eos_ids=(2,), pad_id=0)
        out[f"prefill {name}"] = _fingerprint(lower(prefill))
        out[f"decode {name}"] = _fingerprint(lower(decode))
    return out


def main(argv=None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="cpu", help="cpu, cuda or tpu (lowered from this host)")
    args = parser.parse_args(argv)
    out = fingerprints(args.platform)
    for name, fingerprint in out.items():
        print(f"{name:<18} {fingerprint}")
    return out


if __name__ == "__main__":
    main()
