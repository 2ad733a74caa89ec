"""LoRA on chosen projection weights, and merging it back for export.

The model reads each projection weight as `self.q_proj[...]`. `apply_lora` replaces such an
`nnx.Param` with a `LoRAWeight` module whose `[...]` is W + (alpha / r) * A @ B (reshaped to W's
shape), with A (in x r) Gaussian and B (r x out) zero, so the adapted model starts equal to the
base. Only A and B are `nnx.LoRAParam`, so an optimizer with `wrt=nnx.LoRAParam` trains only them.
A and B are float32 whatever the base's dtype: they are the optimizer's master weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.train.compute import check_params


def _num_input_axes(logical_axes: Sequence[str | None], ndim: int) -> int:
    # Projections into the residual stream end in "embed" (o_proj: N,H,D; down_proj: F,D), so
    # every axis but the last is an input axis; every other projection reads one input axis.
    return ndim - 1 if logical_axes and logical_axes[-1] == "embed" else 1


class LoRAWeight(nnx.Module):
    """A frozen weight plus a trainable low-rank update, read like a Param: `w[...]`."""

    def __init__(self, base: nnx.Param, *, rank: int, scale: float, key: jax.Array):
        value = base.get_value()
        logical_axes = tuple(base.get_metadata().get("logical_axes") or (None,) * value.ndim)
        # a stacked layer weight (leading "layers" axis) gets one adapter per layer: A and B
        # stacked the same way, so each step of the layer scan reads its own layer's slices
        stack = tuple(value.shape[:1]) if logical_axes[:1] == ("layers",) else ()
        logical_axes, shape = logical_axes[len(stack):], value.shape[len(stack):]
        self.num_in = _num_input_axes(logical_axes, len(shape))
        fan_in = math.prod(shape[: self.num_in])
        fan_out = math.prod(shape[self.num_in :])
        self.scale = scale
        self.base = base
        layer_axes = ("layers",) * len(stack)
        a_axes = (*layer_axes, logical_axes[0] if self.num_in == 1 else None, "lora_rank")
        b_axes = (*layer_axes, "lora_rank", logical_axes[-1] if len(shape) - self.num_in == 1 else None)
        a = jax.random.normal(key, (*stack, fan_in, rank), jnp.float32) / math.sqrt(fan_in)
        self.lora_a = nnx.LoRAParam(a, logical_axes=a_axes)
        self.lora_b = nnx.LoRAParam(jnp.zeros((*stack, rank, fan_out), jnp.float32), logical_axes=b_axes)

    def delta(self) -> jax.Array:
        """(alpha / r) * A @ B in the base weight's shape and the adapters' dtype (per layer for a
        stacked weight: inside the layer scan the arrays are one layer's slices, outside A @ B is
        a batched matmul)."""
        ab = self.lora_a[...] @ self.lora_b[...]
        return (self.scale * ab).reshape(self.base[...].shape)

    def __getitem__(self, index):
        """W + delta in the wider of the two dtypes (a float32 step reads a bfloat16 base
        widened, a bfloat16 step reads its bfloat16 base and bfloat16-cast adapters)."""
        w, delta = self.base[...], self.delta()
        dtype = jnp.promote_types(w.dtype, delta.dtype)
        return (w.astype(dtype) + delta.astype(dtype))[index]


def _owners(model: nnx.Module, targets: Sequence[str], kind) -> list[tuple[nnx.Module, str]]:
    found = []
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            for name in targets:
                if isinstance(vars(node).get(name), kind):
                    found.append((node, name))
    return found


def apply_lora(
    model: nnx.Module, *, rank: int, alpha: float, targets: Sequence[str], key: jax.Array
) -> int:
    """Wrap every Param attribute named in `targets` (in place); returns how many were wrapped.

    Raises ValueError when no attribute of the model matches `targets`.
    """
    check_params(model, what="LoRA")
    owners = _owners(model, targets, nnx.Param)
    if not owners:
        raise ValueError(f"no nnx.Param attribute named any of {tuple(targets)} in the model")
    for i, (module, name) in enumerate(owners):
        base = getattr(module, name)
        setattr(
            module,
            name,
            LoRAWeight(base, rank=rank, scale=alpha / rank, key=jax.random.fold_in(key, i)),
        )
    return len(owners)


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every LoRAWeight into a plain Param W + (alpha / r) A B (in place); returns `model`."""
    for module, name in _owners(model, _all_attr_names(model), LoRAWeight):
        wrapped = getattr(module, name)
        base = wrapped.base.get_value()
        merged = (base + wrapped.delta()).astype(base.dtype)
        setattr(module, name, nnx.Param(merged, **_user_metadata(wrapped.base)))
    return model


def _all_attr_names(model: nnx.Module) -> list[str]:
    names = set()
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            names.update(k for k, v in vars(node).items() if isinstance(v, LoRAWeight))
    return sorted(names)


def _user_metadata(param: nnx.Param) -> dict:
    metadata = param.get_metadata()
    return {"logical_axes": metadata["logical_axes"]} if "logical_axes" in metadata else {}
