"""Sharding as data: meshes, logical-axis rules, and placement (all no-ops without a mesh).

Single host: `mesh = make_mesh(MeshConfig(fsdp=-1))`, `shard_model(model, mesh, rules)`, then
`shard_batch(batch, mesh)` for every batch. Training shards weights with `ShardingRules.fsdp()`;
inference with `inference_rules(weight_bytes, mesh)` (tensor parallel or whole, FSDP only for a
model too large for that). Multi-host: call `initialize_distributed(True)` first on
every host; the rest is unchanged, with each host passing its own rows to `shard_batch`.
"""

from w2s_jax.parallel.inference import device_bytes, inference_rules, place_for_inference
from w2s_jax.parallel.mesh import MESH_AXES, MeshConfig, initialize_distributed, make_mesh
from w2s_jax.parallel.placement import (
    batch_sharding,
    constrain,
    constrain_model,
    shard_batch,
    shard_model,
    variable_sharding,
)
from w2s_jax.parallel.rules import LOGICAL_AXES, ShardingRules, logical_to_sharding, logical_to_spec

__all__ = [
    "LOGICAL_AXES",
    "MESH_AXES",
    "MeshConfig",
    "ShardingRules",
    "batch_sharding",
    "constrain",
    "constrain_model",
    "device_bytes",
    "inference_rules",
    "initialize_distributed",
    "logical_to_sharding",
    "logical_to_spec",
    "make_mesh",
    "place_for_inference",
    "shard_batch",
    "shard_model",
    "variable_sharding",
]
