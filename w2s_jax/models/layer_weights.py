"""Two layouts of the layers' matmul weights: stacked for training, one array per layer for inference.

The layers run under one `jax.lax.scan` (`transformer.py`), so inside the scan the layer is a
traced index and every weight is read at that index:

- **stacked** (one `L x ...` array per weight, the default): the layer's slice is a
  `dynamic_index`, which XLA:CPU materialises as a copy before each matmul. Training needs this
  layout (one gradient array per weight) and the program holds one layer whatever the depth.
- **per layer** (the Param holds a tuple of L arrays, each `...`): a matmul reads its weight
  through `jax.lax.switch`, one branch per layer holding just that layer's matmul, so the branch
  taken reads its array in place. Generation at B=1 is memory-bound, and the slice copies tripled
  the bytes moved per token (4 layers of 2048 x 8192 float32 weights, B=1, one core: 155.9 ms
  sliced from a stack against 55.7 ms through the switch; 53.5 ms for a Python loop over the
  arrays). The program grows by one small branch per matmul per layer.

Only the matmul weights go per layer (the seven projections of a layer: two or more axes besides
the layer axis, one of them "embed"); norms and biases stay stacked (their slices are a few KB). The layout is a property of
the loaded model (`load_pretrained(..., layout=)`, or `to_layout` in place), not a flag threaded
through the code: `Transformer.hidden`, and hence generation, scoring and top-k, read either.
The gradient of a switch carries a zero cotangent for every layer not taken, so training, LoRA
and sharding rules that split the layer axis work on the stacked layout only (`check_stacked`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models.matmul import matmul

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
    """Raise if `model` has per-layer weights: `what` (e.g. "training") needs the stacked layout."""
    if is_per_layer(model):
        raise ValueError(f"{what} needs the stacked layout, but this model's layer weights are per layer "
                         "(loaded with layout='per_layer', for inference); call "
                         "`w2s_jax.models.to_layout(model, 'stacked')` first")


def to_layout(model: nnx.Module, layout: str) -> nnx.Module:
    """Convert `model`'s layer matmul weights to `layout`, in place, one weight at a time (the
    old array is dropped as the new one is made: the peak is one weight's extra copy). Each
    array keeps its sharding (a per-layer array gets its stacked parent's, minus the layer axis).
    Returns `model`."""
    check_layout(layout)
    if layout == "per_layer" and any(isinstance(node, nnx.LoRAParam) for _, node in nnx.iter_graph(model)):
        raise ValueError("a model with LoRA adapters stays stacked: merge them first (`merge_lora`)")
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Variable):
            continue
        value = node.get_value()
        if (layout == "per_layer" and isinstance(value, jax.Array)
                and goes_per_layer(node.get_metadata().get("logical_axes"))):
            node.set_value(split_layers(value))
        elif layout == "stacked" and isinstance(value, tuple):
            node.set_value(jnp.stack(value))
    return model


def split_layers(stacked: jax.Array) -> tuple[jax.Array, ...]:
    """`(stacked[0], ..., stacked[L-1])`, each on its parent's devices (sharding minus the layer axis)."""
    sharding = stacked.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        per = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec[1:]))
        return tuple(jax.device_put(stacked[i], per) for i in range(stacked.shape[0]))
    return tuple(stacked[i] for i in range(stacked.shape[0]))


@dataclasses.dataclass(frozen=True)
class LayerWeight:
    """Layer `layer` (a traced index) of a per-layer weight, inside the layer scan.

    Read like a Param value (`w[...]`, `w.astype(dtype)`); `layers.dense` contracts it through
    `matmul`, where each switch branch converts and reshapes only its own layer's array.
    """

    arrays: tuple[jax.Array, ...]
    layer: jax.Array
    dtype: jnp.dtype

    @classmethod
    def at(cls, arrays: tuple[jax.Array, ...], layer: jax.Array) -> LayerWeight:
        return cls(arrays, layer, arrays[0].dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.arrays[0].shape

    def __getitem__(self, index):
        if index is not Ellipsis:
            raise TypeError("a per-layer weight inside the layer scan is read whole (w[...])")
        return self

    def astype(self, dtype) -> LayerWeight:
        return dataclasses.replace(self, dtype=jnp.dtype(dtype))

    def matmul(self, x_NxI: jax.Array) -> jax.Array:
        """`x_NxI @ W_IxO` for this layer's W flattened to (I, O) = (x's columns, the rest)."""
        def branch(w, x):
            return matmul(x, w.astype(self.dtype).reshape(x.shape[1], -1))

        branches = [functools.partial(branch, w) for w in self.arrays]
        if len(branches) == 1:
            return branches[0](x_NxI)
        return jax.lax.switch(self.layer, branches, x_NxI)
