"""Sharding as data: a table from logical array axes to mesh axes.

Every parameter carries `logical_axes` metadata, one name per dimension from the fixed vocabulary
LOGICAL_AXES (or None); activations name theirs where the model pins them (`placement.constrain`).
`ShardingRules` maps each logical name to a mesh axis (or a tuple of mesh axes, or None =
replicated); `logical_to_sharding` turns one parameter's logical axes into a `NamedSharding`.
Without a mesh everything is a no-op.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from w2s_jax.parallel.mesh import MESH_AXES

LOGICAL_AXES = ("layers", "vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "lora_rank", "batch")

MeshAxes = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardingRules:
    """Which mesh axis (or axes, or None = replicated) each logical axis is split over."""

    # the stacked layers' leading axis: never sharded (the layer scan reads one slice per step;
    # split over devices, every step would gather a whole layer from one device)
    layers: MeshAxes = None
    vocab: MeshAxes = None  # vocabulary rows of the embedding / columns of the LM head
    embed: MeshAxes = None  # model width d
    heads: MeshAxes = None  # query heads
    kv_heads: MeshAxes = None  # key/value heads
    head_dim: MeshAxes = None  # per-head width
    mlp: MeshAxes = None  # feed-forward width
    lora_rank: MeshAxes = None  # LoRA rank (tiny: replicated)
    # rows of the activations the model pins (`placement.constrain`), never a parameter's axis;
    # `shard_batch` places input rows over ("data", "fsdp"), which this default matches
    batch: MeshAxes = ("data", "fsdp")
    # mesh axis for the largest divisible dimension of a >= 2-d array the table leaves off it
    fallback: str | None = None

    def __post_init__(self):
        if self.layers is not None:
            raise ValueError(f"ShardingRules.layers={self.layers!r}: the layer axis is never sharded "
                             "(the layer scan reads one layer per step); leave it None")
        for name in LOGICAL_AXES:
            for mesh_axis in _as_tuple(getattr(self, name)):
                if mesh_axis not in MESH_AXES:
                    raise ValueError(
                        f"ShardingRules.{name}={getattr(self, name)!r}: {mesh_axis!r} is not a "
                        f"mesh axis; choose from {MESH_AXES}"
                    )
        if self.fallback is not None and self.fallback not in MESH_AXES:
            raise ValueError(
                f"ShardingRules.fallback={self.fallback!r} is not a mesh axis {MESH_AXES}"
            )

    @classmethod
    def fsdp(cls) -> ShardingRules:
        """Fully sharded data parallel: the model width (else the largest axis) over "fsdp"."""
        return cls(embed="fsdp", fallback="fsdp")

    @classmethod
    def fsdp_tp(cls) -> ShardingRules:
        """FSDP on the model width plus tensor parallelism on heads, mlp and vocab over "tp"."""
        return cls(embed="fsdp", heads="tp", kv_heads="tp", mlp="tp", vocab="tp", fallback="fsdp")

    @classmethod
    def tensor_parallel(cls) -> ShardingRules:
        """Heads, mlp and vocab over "tp", nothing over "fsdp" (that axis then splits rows only):
        inference of a model whose weights fit a tensor-parallel group. A decode step then moves
        activations (an all-reduce of `B x D` after the attention and MLP outputs), never weights;
        with tp = 1 it is `data_parallel()`."""
        return cls(heads="tp", kv_heads="tp", mlp="tp", vocab="tp")

    @classmethod
    def data_parallel(cls) -> ShardingRules:
        """Every weight whole on every device, only the rows split (over "data" and "fsdp"): for
        inference of a model that fits one device, where FSDP would all-gather every weight for
        every token and tensor parallelism would add collectives to every layer."""
        return cls()

    @classmethod
    def tiny(cls) -> ShardingRules:
        """Same as `fsdp()`."""
        return cls.fsdp()

    def mesh_axes(self, logical_axis: str | None) -> tuple[str, ...]:
        """Mesh axes for one logical axis name (empty = replicated)."""
        if logical_axis is None:
            return ()
        if logical_axis not in LOGICAL_AXES:
            raise ValueError(f"unknown logical axis {logical_axis!r}; known: {LOGICAL_AXES}")
        return _as_tuple(getattr(self, logical_axis))


def _as_tuple(mesh_axes: MeshAxes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    if isinstance(mesh_axes, str):
        return (mesh_axes,)
    return tuple(mesh_axes)


def logical_to_spec(
    logical_axes: Sequence[str | None],
    mesh: Mesh,
    rules: ShardingRules,
    *,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """The PartitionSpec for an array with these logical axes.

    Dimensions are assigned left to right; a mesh axis already used by an earlier dimension, or
    whose size (times the other mesh axes on that dimension) does not divide the dimension given
    in `shape`, is dropped for that dimension, which is then split over the remaining ones or
    replicated. Mesh axes of size 1 are dropped (they change nothing).
    """
    if shape is not None and len(shape) != len(logical_axes):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for dim, logical_axis in enumerate(logical_axes):
        chosen: list[str] = []
        for mesh_axis in rules.mesh_axes(logical_axis):
            if mesh_axis in used or mesh.shape[mesh_axis] == 1:
                continue
            split = math.prod(mesh.shape[a] for a in chosen) * mesh.shape[mesh_axis]
            if shape is not None and shape[dim] % split != 0:
                continue
            chosen.append(mesh_axis)
        used.update(chosen)
        spec.append(chosen)
    fallback = rules.fallback
    # the fallback is for matrices (a per-layer vector stacked over layers is still a vector)
    matrix = sum(axis != "layers" for axis in logical_axes) >= 2
    if fallback is not None and shape is not None and matrix and fallback not in used:
        size = mesh.shape[fallback]
        free = [d for d in range(len(shape)) if not spec[d] and shape[d] % size == 0
                and logical_axes[d] != "layers"]
        if size > 1 and free:
            spec[max(free, key=lambda d: shape[d])] = [fallback]
    return PartitionSpec(*(None if not c else c[0] if len(c) == 1 else tuple(c) for c in spec))


def logical_to_sharding(
    logical_axes: Sequence[str | None] | None,
    mesh: Mesh | None,
    rules: ShardingRules | None,
    *,
    shape: Sequence[int] | None = None,
) -> NamedSharding | None:
    """A NamedSharding for an array with `logical_axes` on `mesh`, or None when `mesh` is None.

    `rules=None` means `ShardingRules.fsdp()`; `logical_axes=None` means fully replicated. Pass
    `shape` so axes that do not divide a dimension are replicated instead of failing.
    """
    if mesh is None:
        return None
    if rules is None:
        rules = ShardingRules.fsdp()
    if logical_axes is None:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, logical_to_spec(logical_axes, mesh, rules, shape=shape))
