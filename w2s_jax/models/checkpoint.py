"""Load Hugging Face checkpoints (config.json + safetensors) into a Transformer, and export back.

The module is built abstractly (`nnx.eval_shape`), then each parameter is filled from its
memory-mapped checkpoint tensor straight into a device array — with a mesh, through
`jax.make_array_from_callback`, so each device reads only its slice. The whole model is never
held on the host twice. Pickled `.bin` checkpoints are refused, remote code is never run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.config import ModelConfig, config_from_hf, config_to_hf
from w2s_jax.models.convert import optional_hf_names, tensor_maps
from w2s_jax.models.hub import resolve_checkpoint_dir
from w2s_jax.models.safetensors_format import SafetensorsFile, write_safetensors
from w2s_jax.models.transformer import Transformer

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved


def _open_shards(ckpt_dir: Path) -> dict[str, SafetensorsFile]:
    """Tensor name -> the open file holding it (single file or index.json-sharded)."""
    index_path = ckpt_dir / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = _read_weight_map(index_path)
        files: dict[str, SafetensorsFile] = {}
        for shard in sorted(set(weight_map.values())):
            if not (ckpt_dir / shard).is_file():
                raise FileNotFoundError(f"shard file {shard!r} listed in {index_path.name} is missing from {ckpt_dir}")
            files[shard] = SafetensorsFile(ckpt_dir / shard)
        by_name = {}
        for name, shard in weight_map.items():
            if name not in files[shard].names():
                raise ValueError(f"tensor {name!r} listed in {index_path.name} is not in shard {shard!r}")
            by_name[name] = files[shard]
        return by_name
    single = ckpt_dir / "model.safetensors"
    if single.is_file():
        f = SafetensorsFile(single)
        return {name: f for name in f.names()}
    if list(ckpt_dir.glob("*.bin")) or list(ckpt_dir.glob("*.pt")) or list(ckpt_dir.glob("*.pth")):
        raise ValueError(f"{ckpt_dir} holds only pickled PyTorch weights (.bin/.pt), which are never loaded; "
                         "convert them to safetensors first (e.g. transformers `save_pretrained(..., "
                         "safe_serialization=True)`)")
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {ckpt_dir}")


def _read_weight_map(index_path: Path) -> dict[str, str]:
    """The tensor name -> shard file map of a `model.safetensors.index.json`, checked."""
    try:
        index = json.loads(index_path.read_text())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{index_path}: not valid JSON ({error})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(name, str) and isinstance(shard, str) for name, shard in weight_map.items()):
        raise ValueError(f"{index_path}: no \"weight_map\" object mapping tensor names to shard files")
    return weight_map


def _place(host_array: np.ndarray, dtype, logical_axes, mesh, rules) -> jax.Array:
    """Put one converted host tensor on device(s), sharded per its logical axes when a mesh is given."""
    np_dtype = np.dtype(dtype)
    if mesh is None:
        return jax.device_put(np.asarray(host_array, dtype=np_dtype))
    from w2s_jax.parallel import logical_to_sharding  # lazy: written concurrently, optional

    sharding = logical_to_sharding(logical_axes, mesh, rules, shape=host_array.shape)
    return jax.make_array_from_callback(host_array.shape, sharding,
                                        lambda index: np.asarray(host_array[index], dtype=np_dtype))


def load_pretrained(path_or_hub_name: str | Path, *, dtype=jnp.float32, param_dtype=None, mesh=None,
                    rules=None) -> tuple[Transformer, ModelConfig]:
    """Load a HF checkpoint directory (or Hub name) into `(Transformer, ModelConfig)`.

    dtype: activation dtype; param_dtype: parameter dtype (default: `dtype`). With `mesh`, each
    parameter is sharded per its `logical_axes` under `rules` (default `ShardingRules.fsdp()`).
    Raises FileNotFoundError (config.json / shard file missing), ValueError (missing, unexpected or
    wrongly shaped tensor; pickled weights only; unsupported config option; config.json or index
    not valid JSON; a safetensors file that is truncated or corrupt, as SafetensorsError), each
    naming the file.
    """
    ckpt_dir = resolve_checkpoint_dir(path_or_hub_name)
    config = config_from_hf(ckpt_dir / "config.json")
    param_dtype = dtype if param_dtype is None else param_dtype
    if mesh is not None and rules is None:
        from w2s_jax.parallel import ShardingRules

        rules = ShardingRules.fsdp()
    tensors = _open_shards(ckpt_dir)
    maps = {m.path: m for m in tensor_maps(config)}
    missing = sorted(m.hf_name for m in maps.values() if m.hf_name not in tensors)
    if missing:
        raise ValueError(f"checkpoint {ckpt_dir} is missing tensor(s) {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}")
    expected = {m.hf_name for m in maps.values()} | optional_hf_names(config)
    unexpected = sorted(n for n in tensors if n not in expected and not n.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"checkpoint {ckpt_dir} has unexpected tensor(s) {unexpected[:8]} for "
                         f"model_type={config.model_type!r} (is config.json right?)")
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))
    graphdef, state = nnx.split(abstract)
    for path, variable in nnx.to_flat_state(state):
        m = maps.get(path)
        if m is None:
            raise ValueError(f"parameter {path} has no checkpoint mapping")
        file = tensors[m.hf_name]
        if file.shape(m.hf_name) != m.hf_shape:
            raise ValueError(f"tensor {m.hf_name!r} in {file.path.name} has shape {file.shape(m.hf_name)}, "
                             f"expected {m.hf_shape} from config.json")
        host_array = m.from_hf(file.get(m.hf_name))
        variable.set_value(_place(host_array, param_dtype, variable.get_metadata().get("logical_axes"), mesh, rules))
    return nnx.merge(graphdef, state), config


def save_pretrained(model: Transformer, config: ModelConfig, out_dir: str | Path) -> Path:
    """Write `model.safetensors` + `config.json` that `transformers` loads (HF names and layouts).

    Tensors keep the parameters' dtype (float32 or bfloat16). Returns the output directory.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    maps = tensor_maps(config)
    unmapped = sorted(set(params) - {m.path for m in maps})
    if unmapped:
        raise ValueError(f"parameters {unmapped[:4]} have no HF name (merge adapters into the base weights first)")
    tensors = []
    for m in maps:
        host_array = np.asarray(jax.device_get(params[m.path].get_value()))
        tensors.append((m.hf_name, np.ascontiguousarray(m.to_hf(host_array))))
    dtypes = {str(a.dtype) for _, a in tensors}
    write_safetensors(out_dir / "model.safetensors", tensors)
    hf_config = config_to_hf(config, dtype_name=dtypes.pop() if len(dtypes) == 1 else "float32")
    tmp = out_dir / ".config.json.partial"
    tmp.write_text(json.dumps(hf_config, indent=2) + "\n")
    os.replace(tmp, out_dir / "config.json")
    return out_dir
