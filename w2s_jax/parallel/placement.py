"""Placing a model's parameters and a batch's rows on a mesh.

Multi-host use: `shard_batch` takes the rows THIS host loaded (its contiguous slice of the global
batch, `global_batch // jax.process_count()` rows) and assembles the global array with
`jax.make_array_from_process_local_data`; each host must load a different slice, in process-index
order. `shard_model` is the same on every host (each host keeps only its addressable shards).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from w2s_jax.parallel.rules import ShardingRules, logical_to_sharding

BATCH_AXES = ShardingRules().batch  # ("data", "fsdp")


def variable_sharding(
    variable: nnx.Variable, mesh: Mesh | None, rules: ShardingRules | None
) -> NamedSharding | None:
    """The sharding of one nnx Variable from its `logical_axes` metadata (replicated if absent)."""
    value = variable.get_value()
    logical_axes = variable.get_metadata().get("logical_axes")
    return logical_to_sharding(logical_axes, mesh, rules, shape=np.shape(value))


def shard_model(model: nnx.Module, mesh: Mesh | None, rules: ShardingRules | None = None) -> None:
    """Place every array Variable of `model` (in place) per its `logical_axes` metadata.

    Variables without metadata are replicated over the mesh, so a jitted step never mixes arrays
    committed to different devices. A no-op when `mesh` is None; `rules=None` = FSDP rules.
    """
    if mesh is None:
        return
    check_head_split(getattr(model, "config", None), mesh, rules)
    placed_on = getattr(model, "placed_on", None)
    if placed_on is not None:  # a model whose program depends on its placement (a Transformer)
        placed_on(mesh, rules)
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Variable):
            continue
        value = node.get_value()
        if isinstance(value, jax.Array):
            node.set_value(jax.device_put(value, variable_sharding(node, mesh, rules)))
        elif isinstance(value, tuple):  # one array per layer (`models/layer_weights.py`), axes in "layer_axes"
            axes = node.get_metadata().get("layer_axes")
            node.set_value(tuple(jax.device_put(v, logical_to_sharding(axes, mesh, rules, shape=v.shape))
                                 for v in value))


def check_head_split(config, mesh: Mesh | None, rules: ShardingRules | None) -> None:
    """Warn when the rules split the query or key/value heads over more devices than divide their
    number: those weights (and the KV cache's heads) are then replicated over the split, so every
    device holds and computes all of them, which tensor parallelism was meant to avoid."""
    if mesh is None or config is None:
        return
    rules = ShardingRules.fsdp() if rules is None else rules
    for axis, count in (("heads", config.num_heads), ("kv_heads", config.num_kv_heads)):
        split = math.prod(mesh.shape[a] for a in rules.mesh_axes(axis))
        if split > 1 and count % split != 0:
            warnings.warn(f"the {count} {axis.replace('_', '/')} do not divide over {split} devices "
                          f"({'x'.join(rules.mesh_axes(axis))}): those weights are replicated there, not split; "
                          f"use a tensor-parallel size that divides {count}, or data parallelism for a model that "
                          "fits one device", stacklevel=3)


def batch_sharding(mesh: Mesh, ndim: int, *, axis: int = 0) -> NamedSharding:
    """The batch axis (`axis`, leading by default; 1 for a stacked `L x B x ...` KV cache) over
    ("data", "fsdp"), every other axis replicated."""
    spec = [None] * ndim
    spec[axis] = BATCH_AXES
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_batch(x, mesh: Mesh | None):
    """Place a pytree of host arrays with the batch axis split over ("data", "fsdp").

    `x` holds this process's rows; on one host that is the whole batch. The batch size must be
    divisible by data * fsdp. Returns `x` unchanged when `mesh` is None.
    """
    if mesh is None:
        return x
    splits = mesh.shape["data"] * mesh.shape["fsdp"]

    def place(leaf):
        leaf = np.asarray(leaf)
        global_rows = leaf.shape[0] * jax.process_count()
        if global_rows % splits != 0:
            raise ValueError(
                f"global batch size {global_rows} is not divisible by data*fsdp = {splits}"
            )
        return jax.make_array_from_process_local_data(batch_sharding(mesh, leaf.ndim), leaf)

    return jax.tree.map(place, x)


def constrain_model(node, mesh: Mesh | None, rules: ShardingRules | None = None) -> None:
    """Inside jit: pin every array Variable of `node` to its rules' sharding (in place).

    Without this, the shardings of updated parameters and optimizer moments leaving a jitted
    step are whatever XLA's propagation picks. A no-op when `mesh` is None.
    """
    if mesh is None:
        return
    for _, variable in nnx.iter_graph(node):
        if isinstance(variable, nnx.Variable) and isinstance(variable.get_value(), jax.Array):
            sharding = variable_sharding(variable, mesh, rules)
            variable.set_value(jax.lax.with_sharding_constraint(variable.get_value(), sharding))


def constrain(x: jax.Array, logical_axes, mesh: Mesh | None, rules: ShardingRules | None = None) -> jax.Array:
    """Inside jit: pin an activation to the sharding of its `logical_axes` (e.g. ("batch", None,
    None) for a `B x T x D` residual stream: rows over ("data", "fsdp"), the rest whole), so that
    XLA's propagation does not carry a weight's split onto it. The rules' `fallback` does not apply
    (an activation is split only where its axes say). `x` unchanged when `mesh` is None."""
    if mesh is None:
        return x
    rules = dataclasses.replace(ShardingRules.fsdp() if rules is None else rules, fallback=None)
    return jax.lax.with_sharding_constraint(x, logical_to_sharding(logical_axes, mesh, rules, shape=x.shape))
