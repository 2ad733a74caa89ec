"""How a training step computes: its activation dtype, the dtype its frozen weights are stored in,
and whether each layer is recomputed in the backward pass.

A step in `compute_dtype` reads every weight in that dtype. The trained weights are float32 (the
optimizer's master copy) and are cast inside the step, so their gradients flow back through the
cast. A weight the optimizer never updates (the base of a LoRA run) needs no float32 copy:
`store_frozen_in` converts it in place once, before the first step, and the step then reads it
as it is, with no per-step cast (a cast of a stacked weight is a copy of every layer's weight).

The activation dtype of a module is its `dtype` attribute, the Flax convention `Transformer`
and its blocks follow; `computing_in` sets it on the module a step merges from its arguments, so
a model loaded in float32 trains in bfloat16 without being rebuilt, and the model passed in is
left as it was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import filterlib
from jax.sharding import Mesh


def check_params(model: nnx.Module, *, what: str) -> None:
    """Put `model` in the layout `what` (e.g. "training") reads, one array per parameter: a model
    loaded for fast CPU inference (per-layer weights, `load_pretrained`'s default there) is
    converted in place (`w2s_jax.models.layer_weights.check_stacked`); then raise if a Variable
    still holds anything but one array."""
    from w2s_jax.models.layer_weights import check_stacked

    check_stacked(model, what=what)
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable) and isinstance(node.get_value(), tuple):
            where = "/".join(str(p) for p in path)
            raise ValueError(f"{what} needs the stacked layout (one array per parameter), but {where} holds "
                             f"{len(node.get_value())} arrays (weights split per layer for inference); call "
                             "`w2s_jax.models.to_layout(model, 'stacked')` first")


def store_frozen_in(model: nnx.Module, trainable, dtype) -> int:
    """Convert every float32 array of `model` that the filter `trainable` does not select to
    `dtype` (in place, one array at a time); returns how many were converted. float32 `dtype`
    converts nothing, and nothing is ever widened."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return 0
    selected = filterlib.to_predicate(trainable)
    converted = 0
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Variable) or selected(path, node):
            continue
        value = node.get_value()
        if isinstance(value, jax.Array) and value.dtype == jnp.float32:
            node.set_value(value.astype(dtype))
            converted += 1
    return converted


def computing_in(model: nnx.Module, dtype, remat: str | None) -> nnx.Module:
    """Set the activation dtype of `model` and of every submodule that has one, and the model's
    `remat` policy (None: leave the model's own, `Transformer`'s default being none); returns
    `model`. For a module merged inside a step.

    Raises ValueError when `remat` is set and the model has no `remat` attribute to take it.
    """
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and hasattr(node, "dtype"):
            node.dtype = jnp.dtype(dtype)
    if remat is not None:
        if not hasattr(model, "remat"):
            raise ValueError(f"remat={remat!r} asked for, but {type(model).__name__} has no `remat` attribute")
        model.remat = remat
    return model


def platform_of(model: nnx.Module, mesh: Mesh | None) -> str:
    """The platform ("cpu", "gpu", "tpu", ...) a step over `model` runs on: the mesh's devices',
    else those of the model's first array."""
    if mesh is not None:
        return mesh.devices.flat[0].platform
    for leaf in jax.tree.leaves(nnx.state(model)):
        if isinstance(leaf, jax.Array):
            return next(iter(leaf.devices())).platform
    return jax.default_backend()
