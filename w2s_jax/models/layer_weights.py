"""Two layouts of the layers' matmul weights: stacked for training, one array per layer for inference.

The layers run under one `jax.lax.scan` (`transformer.py`), so inside the scan the layer is a
traced index and every weight is read at that index:

- **stacked** (one `L x ...` array per weight, the default): the layer's slice is a
  `dynamic_index`, which XLA:CPU materialises as a copy before each matmul. Training needs this
  layout (one gradient array per weight) and the program holds one layer whatever the depth.
- **per layer** (the Param holds a tuple of L arrays, each `...`): a matmul reads its weight
  through `jax.lax.switch`, one branch per layer holding just that layer's matmul, so the branch
  taken reads its array in place. Generation at B=1 is memory-bound, and on XLA:CPU the slice
  copies of the stacked layout multiplied the bytes moved per token. The program grows by one
  small branch per matmul per layer. This is the CPU backend's inference layout only: a switch is
  a conditional, which an accelerator must not run per token (`backend.py`).

Each per-layer array is stored `out x in`, the checkpoint's own layout (the loader copies it
without a transpose), and contracted on its last axis, which XLA:CPU's kernels ran faster for
bf16 at every row count and for float32 at the row counts that matter; a product of 2-32 rows
puts the weight first (`matmul.weight_major`). The measurements are in docs/benchmarks.md.

Only the matmul weights go per layer (the seven projections of a layer: two or more axes besides
the layer axis, one of them "embed"); norms and biases stay stacked (their slices are a few KB).
The layout is a property of the loaded model (`load_pretrained(..., layout=)`, or `to_layout` in
place), not a flag threaded through the code: `Transformer.hidden`, and hence generation, scoring and top-k, read either.
The gradient of a switch carries a zero cotangent for every layer not taken, so training, LoRA
and sharding rules that split the layer axis work on the stacked layout only: they convert a
per-layer model first (`check_stacked`).
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.matmul import matmul_with, product

LAYOUTS = ("stacked", "per_layer")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: use one of {LAYOUTS} (stacked: for training; per_layer: "
                         "faster generation and scoring, inference only)")


def goes_per_layer(logical_axes) -> bool:
    """A stacked matmul weight: the leading "layers" axis, then a matrix reading from or writing
    to the residual stream ("embed"; a `N x H` bias has neither)."""
    axes = tuple(logical_axes or ())
    return len(axes) >= 3 and axes[0] == "layers" and "embed" in axes[1:]


def is_per_layer(model: nnx.Module) -> bool:
    """Whether any of `model`'s Variables holds a tuple of per-layer arrays."""
    return any(isinstance(node, nnx.Variable) and isinstance(node.get_value(), tuple)
               for _, node in nnx.iter_graph(model))


def check_stacked(model: nnx.Module, *, what: str) -> None:
    """Put `model`'s layer weights in the stacked layout that `what` (e.g. "training") reads, in
    place (a no-op when they are stacked already): a model loaded for fast inference on the CPU
    (per-layer weights, `load_pretrained`'s default there) trains without its caller knowing
    about layouts. The conversion copies each weight once (`to_layout`)."""
    if is_per_layer(model):
        to_layout(model, "stacked")


def has_lora_adapters(model: nnx.Module) -> bool:
    """Whether `model` holds low-rank adapters on its weights (`w2s_jax.train.lora.LoRAWeight`, or
    flax's own `nnx.LoRA` modules). Not every `nnx.LoRAParam` is one: a classifier's head is
    trained in LoRA runs as a `LoRAParam` but is a plain weight, which changes no layout."""
    # A LoRAWeight exists only once its module is imported: looked up, not imported, so the
    # models package does not pull in the training code.
    lora = sys.modules.get("w2s_jax.train.lora")
    kinds = (nnx.LoRA,) + ((lora.LoRAWeight,) if lora is not None else ())
    return any(isinstance(node, kinds) for _, node in nnx.iter_graph(model))


def to_layout(model: nnx.Module, layout: str) -> nnx.Module:
    """Convert `model`'s layer matmul weights to `layout`, in place, one weight at a time (the
    old array is dropped as the new one is made: the peak is one weight's extra copy). Each
    array keeps its sharding (a per-layer array gets its stacked parent's, minus the layer axis).
    Returns `model`."""
    check_layout(layout)
    backend = getattr(model, "backend", None)
    if layout == "per_layer" and backend is not None and backend.layout != "per_layer":
        raise ValueError(f"layout='per_layer' is read through a conditional per layer, which the {backend.platform} "
                         "backend does not run; keep the stacked layout")
    if layout == "per_layer" and has_lora_adapters(model):
        raise ValueError("a model with LoRA adapters stays stacked: merge them first (`merge_lora`)")
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Variable):
            continue
        value, axes = node.get_value(), node.get_metadata().get("logical_axes")
        if layout == "per_layer" and isinstance(value, jax.Array) and goes_per_layer(axes):
            set_per_layer(node, split_layers(value, axes))
        elif layout == "stacked" and isinstance(value, tuple):
            node.set_value(stack_layers(value, axes))
    return model


def set_per_layer(variable: nnx.Variable, arrays: tuple[jax.Array, ...]) -> None:
    """Give a stacked weight's Variable its per-layer arrays, with their logical axes as the
    "layer_axes" metadata (read by `parallel.shard_model`; "logical_axes" stays the stacked one's)."""
    variable.set_value(arrays)
    variable.set_metadata("layer_axes", per_layer_axes(variable.get_metadata()["logical_axes"]))


def num_inputs(logical_axes) -> int:
    """How many leading axes of a matmul weight (layer axis excluded) are its input axes: every
    axis but the last for a projection into the residual stream (o: N,H,D; down: F,D), else one."""
    axes = tuple(logical_axes or ())
    axes = axes[1:] if axes[:1] == ("layers",) else axes
    return len(axes) - 1 if axes and axes[-1] == "embed" else 1


def stored_order(items, n: int) -> tuple:
    """One layer's axes, shape or sharding spec (our `in x out` order, `n` input axes) in the
    order a per-layer array stores them: `out x in`."""
    items = tuple(items)
    return items[n:] + items[:n]


def our_order(items, n: int) -> tuple:
    """Inverse of `stored_order`: a stored array's axes or shape in our `in x out` order."""
    items = tuple(items)
    k = len(items) - n
    return items[k:] + items[:k]


def per_layer_axes(logical_axes) -> tuple:
    """The logical axes of one per-layer array of a stacked weight with `logical_axes`."""
    return stored_order(tuple(logical_axes)[1:], num_inputs(logical_axes))


def _stored(layer_value: jax.Array, n: int) -> jax.Array:
    """Our `in x out` layer weight in its per-layer storage layout."""
    return jnp.transpose(layer_value, stored_order(range(layer_value.ndim), n))


def _ours(stored, n: int):
    """Inverse of `_stored` (numpy or jax arrays)."""
    return stored.transpose(our_order(range(stored.ndim), n))


def split_layers(stacked: jax.Array, logical_axes) -> tuple[jax.Array, ...]:
    """The per-layer arrays of a stacked weight, each on its parent's devices (sharding minus
    the layer axis, permuted with the array)."""
    n = num_inputs(logical_axes)
    arrays = tuple(_stored(stacked[i], n) for i in range(stacked.shape[0]))
    sharding = stacked.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec) + (None,) * (stacked.ndim - len(sharding.spec))
        per = jax.sharding.NamedSharding(sharding.mesh,
                                         jax.sharding.PartitionSpec(*stored_order(spec[1:], n)))
        arrays = tuple(jax.device_put(a, per) for a in arrays)
    return arrays


def stack_layers(arrays: tuple[jax.Array, ...], logical_axes) -> jax.Array:
    """Inverse of `split_layers`: our stacked `L x in x out` array."""
    n = num_inputs(logical_axes)
    return jnp.stack([_ours(a, n) for a in arrays])


def stacked_host_value(value, logical_axes):
    """A parameter's value as a host (numpy) array in our stacked layout, either layout."""
    if not isinstance(value, tuple):
        return np.asarray(jax.device_get(value))
    n = num_inputs(logical_axes)
    return np.stack([_ours(np.asarray(jax.device_get(a)), n) for a in value])


@dataclasses.dataclass(frozen=True)
class LayerWeight:
    """Layer `layer` (a traced index) of a per-layer weight, inside the layer scan.

    Read like a Param value (`w[...]`, `w.astype(dtype)`); `layers.dense` contracts it through
    `matmul`, where each switch branch converts and reshapes only its own layer's array.
    """

    arrays: tuple[jax.Array, ...]
    layer: jax.Array
    dtype: jnp.dtype
    num_in: int  # input axes of the weight in our in x out order

    @classmethod
    def at(cls, arrays: tuple[jax.Array, ...], layer: jax.Array, logical_axes) -> LayerWeight:
        return cls(arrays, layer, arrays[0].dtype, num_inputs(logical_axes))

    @property
    def shape(self) -> tuple[int, ...]:
        """Our `in x out` shape of one layer's weight."""
        return our_order(self.arrays[0].shape, self.num_in)

    def __getitem__(self, index):
        if index is not Ellipsis:
            raise TypeError("a per-layer weight inside the layer scan is read whole (w[...])")
        return self

    def astype(self, dtype) -> LayerWeight:
        return dataclasses.replace(self, dtype=jnp.dtype(dtype))

    def matmul(self, x_NxI: jax.Array) -> jax.Array:
        """`x_NxI @ W_IxO` for this layer's W flattened to (I, O) = (x's columns, the rest), as
        `matmul.matmul` computes it, each switch branch holding just the product."""

        def branch(w, x, accumulate):
            w = w.astype(self.dtype).reshape(-1, x.shape[1])  # out x in
            return product(x, w, transpose_b=True, accumulate=accumulate)

        def switch(x, accumulate):
            branches = [functools.partial(branch, w, accumulate=accumulate) for w in self.arrays]
            if len(branches) == 1:
                return branches[0](x)
            return jax.lax.switch(self.layer, branches, x)

        return matmul_with(x_NxI, self.dtype, switch)
