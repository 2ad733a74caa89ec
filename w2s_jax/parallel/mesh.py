"""Device meshes with the axes ("data", "fsdp", "tp"), and multi-host start-up.

Multi-host use: every host runs the same program. Call `initialize_distributed(True)` first (before
any other JAX call), then `make_mesh(MeshConfig(...))`. `jax.devices()` then lists the devices of
ALL hosts, so the mesh spans the whole job; each host feeds only its own slice of every batch via
`shard_batch` (see `placement.py`). On one host everything works the same with the local devices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Sizes of the three mesh axes; at most one may be -1 (= all remaining devices)."""

    data: int = 1  # pure data parallelism: parameters replicated, batch split
    fsdp: int = -1  # fully sharded data parallelism: parameters and batch split
    tp: int = 1  # tensor parallelism: heads / mlp / vocab split

    def __post_init__(self):
        sizes = {"data": self.data, "fsdp": self.fsdp, "tp": self.tp}
        for name, size in sizes.items():
            if not isinstance(size, int) or (size < 1 and size != -1):
                raise ValueError(f"MeshConfig.{name} must be a positive int or -1, got {size!r}")
        wildcards = [name for name, size in sizes.items() if size == -1]
        if len(wildcards) > 1:
            raise ValueError(f"at most one MeshConfig axis may be -1, got {wildcards}")

    @classmethod
    def tiny(cls) -> MeshConfig:
        """All devices on the fsdp axis."""
        return cls()

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """Axis sizes (data, fsdp, tp) for `num_devices` devices, with -1 filled in."""
        sizes = [self.data, self.fsdp, self.tp]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known != 0:
                raise ValueError(
                    f"{num_devices} devices are not divisible by the fixed axis sizes {self} "
                    f"(product {known})"
                )
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                f"but {num_devices} are available"
            )
        return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axis names ("data", "fsdp", "tp") over `devices` (default: all devices).

    Axis types are `Auto`, so jit propagates shardings from the inputs' placement.
    """
    if devices is None:
        devices = jax.devices()
    shape = cfg.resolve(len(devices))
    device_grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def initialize_distributed(enabled: bool) -> None:
    """Call `jax.distributed.initialize()` (coordinator from the environment) when `enabled`.

    On a multi-host TPU/GPU cluster the coordinator address, process count and process id are read
    from the environment (TPU metadata, SLURM, or the JAX_COORDINATOR_* variables). Must run
    before any other JAX call on every host. A no-op when `enabled` is False.
    """
    if enabled:
        jax.distributed.initialize()
