"""Which sharding rules inference runs under on a mesh: weights whole or split over tensor
parallelism when they fit, FSDP only when they do not.

Under FSDP every weight is split over the "fsdp" axis and gathered where it is used; a decode step
uses every weight for a few rows, so it all-gathers every layer's weights for every token (the
whole model's bytes through the interconnect per token: ~15 GB at 7B in bfloat16), where the
arithmetic is a few `B x D` rows. Training amortises the same gathers over thousands of rows per
step; decoding cannot. So inference splits weights only over "tp" (`ShardingRules.tensor_parallel`:
per token an all-reduce of `B x D` activations per attention and MLP output) and uses "data" and
"fsdp" for rows alone, which is data parallelism when tp = 1. Only a model whose weights do not
fit a tensor-parallel group's devices falls back to `ShardingRules.fsdp_tp()`, with a warning that
decoding gathers weights per token and that a larger tp avoids it.

`tests/lm/test_inference_sharding.py` counts the all-gathers of a decode step lowered on 8 devices
under each choice.
"""

from __future__ import annotations

import warnings

import jax
from jax.sharding import Mesh

from w2s_jax.parallel.rules import ShardingRules

# the part of a device's memory the weights may take; the rest holds the KV cache, activations
# and compiled programs
WEIGHT_SHARE = 0.5


def device_bytes(mesh: Mesh) -> int | None:
    """Memory of one of `mesh`'s devices (the allocator's limit), or None where the platform does
    not report one (the CPU: host memory, shared by its devices)."""
    stats = next(iter(mesh.devices.flat)).memory_stats()
    return None if not stats or "bytes_limit" not in stats else int(stats["bytes_limit"])


def inference_rules(weight_bytes: int, mesh: Mesh | None, *, memory: int | None = None) -> ShardingRules | None:
    """The rules to place a model of `weight_bytes` on `mesh` for generation and scoring (None
    without a mesh). memory: bytes of one device (default: `device_bytes(mesh)`; None: unknown,
    the weights are taken to fit)."""
    if mesh is None:
        return None
    if weight_bytes < 0:
        raise ValueError(f"weight_bytes={weight_bytes} must be >= 0")
    memory = device_bytes(mesh) if memory is None else memory
    tp = mesh.shape["tp"]
    if memory is None or weight_bytes / tp <= WEIGHT_SHARE * memory:
        return ShardingRules.tensor_parallel()
    need = -(-weight_bytes // int(WEIGHT_SHARE * memory))
    warnings.warn(f"the weights ({weight_bytes / 2**30:.1f} GiB) do not fit {tp} device(s) of "
                  f"{memory / 2**30:.1f} GiB at {WEIGHT_SHARE:.0%} for weights: sharding them over fsdp too, so "
                  f"every decoded token all-gathers each layer's weights; a mesh with tp >= {need} decodes "
                  "without moving weights", stacklevel=2)
    return ShardingRules.fsdp_tp()


def place_for_inference(model, mesh: Mesh | None) -> ShardingRules | None:
    """Re-place `model`'s arrays (in place) under `inference_rules` for the bytes of its
    parameters: a model trained under FSDP, before it generates. Returns the rules (None without
    a mesh, when nothing moves)."""
    from flax import nnx

    from w2s_jax.parallel.placement import shard_model

    if mesh is None:
        return None
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    rules = inference_rules(weight_bytes, mesh)
    shard_model(model, mesh, rules)
    return rules
