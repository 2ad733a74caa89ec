"""Load Hugging Face checkpoints (config.json + safetensors) into a Transformer, and export back.

The module is built abstractly (`nnx.eval_shape`), then each parameter is written, in our layout
and dtype, into one preallocated host array straight from its memory-mapped checkpoint tensors
(linear weights by tiled transposes, `host_copy`; the stacked layers' tensors into their slices;
in parallel threads), so a parameter is converted in one pass with no intermediate copy and no
device program to compile. Without a mesh the array goes to the default device with one
`jax.device_put`, which on the CPU adopts the page-aligned array as the device buffer: the
loaded weights cost their own size once. (XLA cannot reuse a buffer it does not own for a
donated argument: the first step that donates the parameters writes its outputs to new memory
and the loaded buffers are freed after it, a one-time extra copy; later steps update in place.)
With a mesh each device gets a copy of only its slice. One parameter is in flight
at a time. With `layout="per_layer"` (inference, `layer_weights.py`) each layer's matmul
weight is a device array of its own, each a view of the parameter's one host array, in the
checkpoint's `out x in` layout (copied without a transpose). Pickled `.bin`
checkpoints are refused, remote code is never run. A transformers sequence classifier's
checkpoint (`<Family>ForSequenceClassification`: the decoder, `score.weight`, no LM head) is no
language model: `load_backbone` reads it, for `classifier.load_classifier`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.backend import for_mesh
from w2s_jax.models.config import ModelConfig, config_from_hf, config_to_hf
from w2s_jax.models.convert import SCORE_WEIGHT, TensorMap, optional_hf_names, tensor_maps
from w2s_jax.models.host_copy import copy_into, host_buffer, transpose_into
from w2s_jax.models.hub import resolve_checkpoint_dir
from w2s_jax.models.layer_weights import (
    check_layout,
    goes_per_layer,
    num_inputs,
    per_layer_axes,
    set_per_layer,
    stacked_host_value,
    stored_order,
)
from w2s_jax.models.safetensors_format import SafetensorsFile, write_safetensors
from w2s_jax.models.transformer import Transformer

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved
_SEQUENCE_CLASSIFIER = "ForSequenceClassification"  # transformers' class suffix for a score-head model
_CHUNK_BYTES = 16 << 20  # source bytes per copy job: large tensors are split across the threads


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


def _place(host_array: np.ndarray, logical_axes, mesh, rules) -> jax.Array:
    """Put one converted host tensor on the mesh's devices, sharded per its logical axes (each
    device gets only its slice, in memory of its own)."""
    from w2s_jax.parallel import logical_to_sharding  # lazy: written concurrently, optional

    sharding = logical_to_sharding(logical_axes, mesh, rules, shape=host_array.shape)
    # A copy per device: CPU devices adopt an aligned numpy array as their buffer, and
    # `jax.make_array_from_callback` hands a replicated parameter's one array to every device,
    # so replicas would share memory and a step donating one device's buffer would overwrite
    # the others'.
    shards = [jax.device_put(np.array(host_array[index]), device)
              for device, index in sharding.addressable_devices_indices_map(host_array.shape).items()]
    return jax.make_array_from_single_device_arrays(host_array.shape, sharding, shards)


def _put(host_array: np.ndarray, logical_axes, mesh, rules) -> jax.Array:
    """One converted host tensor as a device array: without a mesh, on the CPU, the device buffer
    is `host_array` itself (no copy; a per-layer slice of a stacked buffer too, when its offset
    is aligned); on a mesh, sharded by `_place`."""
    return jax.device_put(host_array) if mesh is None else _place(host_array, logical_axes, mesh, rules)


def _check_shapes(maps: list[TensorMap], tensors: dict[str, SafetensorsFile]) -> None:
    for m in maps:
        file = tensors[m.hf_name]
        if file.shape(m.hf_name) != m.hf_shape:
            raise ValueError(f"tensor {m.hf_name!r} in {file.path.name} has shape {file.shape(m.hf_name)}, "
                             f"expected {m.hf_shape} from config.json")


def _row_chunks(rows: int, row_bytes: int) -> list[slice]:
    """Slices of about `_CHUNK_BYTES` over `rows` rows: the pieces one tensor is copied in by
    several threads."""
    per = max(1, _CHUNK_BYTES // max(1, row_bytes))
    return [slice(r, min(r + per, rows)) for r in range(0, rows, per)]


def _fill(out: np.ndarray, maps: list[TensorMap], tensors: dict[str, SafetensorsFile],
          pool: ThreadPoolExecutor, *, hf_layout: bool = False) -> None:
    """Write one parameter's checkpoint tensors into `out` (our layout and dtype, stacked layers at
    `out[layer]`): linear weights by tiled transposes, the rest by plain copies, each tensor cut
    into row chunks run by the threads of `pool`. The dtype changes on the way, so no other copy
    of the parameter is made; the source is read once, through the memory map. `hf_layout`:
    `out` holds linear weights in the checkpoint's own `out x in` layout (per-layer weights,
    `layer_weights.py`), copied without a transpose."""
    jobs = []
    for m in maps:
        src = tensors[m.hf_name].get(m.hf_name)
        dst = out if m.layer is None else out[m.layer]
        if hf_layout and not m.transposed:
            raise ValueError(f"{m.hf_name} is not a linear weight: it has no out x in layout to keep")
        if m.transposed and not hf_layout:  # dst is contiguous: a (in, out) view of it takes the (out, in) rows transposed
            dst = dst.reshape(src.shape[::-1])
            jobs += [(transpose_into, dst[:, rows], src[rows]) for rows in _row_chunks(len(src), src[0].nbytes)]
        elif src.ndim >= 2:
            dst = dst.reshape(src.shape)
            jobs += [(copy_into, dst[rows], src[rows]) for rows in _row_chunks(len(src), src[0].nbytes)]
        else:
            jobs.append((copy_into, dst.reshape(src.shape), src))
    list(pool.map(lambda job: job[0](job[1], job[2]), jobs))


def _read(maps: list[TensorMap], tensors: dict[str, SafetensorsFile], shape, dtype,
          pool: ThreadPoolExecutor, *, hf_layout: bool = False) -> np.ndarray:
    """One parameter as a page-aligned host array of `dtype` and `shape` (see `_fill`)."""
    out = host_buffer(tuple(shape), dtype)
    _fill(out, maps, tensors, pool, hf_layout=hf_layout)
    return out


def _read_per_layer(maps, tensors, shape, dtype, logical_axes, pool, mesh, rules) -> tuple[jax.Array, ...]:
    """A stacked matmul weight of our `shape` as per-layer device arrays in their storage layout
    (`layer_weights.py`): one host buffer, each layer's array a view of it (adopted without a
    copy on the CPU when its offset is aligned)."""
    # L x out x in: the checkpoint's tensors as they are
    shape = (shape[0],) + stored_order(shape[1:], num_inputs(logical_axes))
    host_array = _read(maps, tensors, shape, dtype, pool, hf_layout=True)
    axes = per_layer_axes(logical_axes)
    return tuple(_put(host_array[i], axes, mesh, rules) for i in range(len(host_array)))


def load_pretrained(path_or_hub_name: str | Path, *, dtype=jnp.float32, param_dtype=None, mesh=None,
                    rules=None, layout: str | None = None) -> tuple[Transformer, ModelConfig]:
    """Load a HF checkpoint directory (or Hub name) into `(Transformer, ModelConfig)`.

    dtype: activation dtype; param_dtype: parameter dtype (default: `dtype`). With `mesh`, each
    parameter is sharded per its `logical_axes` under `rules`; the default is inference's
    (`w2s_jax.parallel.inference_rules`: tensor parallel over "tp", or whole on every device, unless
    the weights do not fit; `train` re-shards a model under training's rules).
    Raises FileNotFoundError (config.json / shard file missing), ValueError (missing, unexpected or
    wrongly shaped tensor; pickled weights only; unsupported config option; config.json or index
    not valid JSON; a safetensors file that is truncated or corrupt, as SafetensorsError; a
    sequence classifier's checkpoint, which has no LM head: `load_classifier` reads it), each
    naming the file.

    layout: None (default): the inference layout of the backend of the devices the model is placed
    on (`Backend.layout`: "per_layer" on the CPU, "stacked" on accelerators); "stacked" (what
    training reads; `train` converts a per-layer model itself) or "per_layer": each layer's matmul weights
    as arrays of their own, read in place by generation and scoring (faster decoding on the CPU,
    docs/benchmarks.md; inference only, `layer_weights.py`; refused with a warning on a backend
    that reads stacked weights). Convert later with `to_layout`.
    """
    if layout is not None:
        check_layout(layout)
    ckpt_dir = resolve_checkpoint_dir(path_or_hub_name)
    config = config_from_hf(ckpt_dir / "config.json")
    architecture = sequence_classifier_architecture(ckpt_dir)
    if architecture is not None:
        raise ValueError(f"checkpoint {ckpt_dir} is a sequence classifier ({architecture}: a score head and no "
                         "LM head), not a language model: load it with `load_classifier`")
    model = _load(ckpt_dir, config, _open_shards(ckpt_dir), frozenset(), dtype=dtype, param_dtype=param_dtype,
                  mesh=mesh, rules=rules, layout=layout)
    return model, config


def load_backbone(path_or_hub_name: str | Path, *, dtype=jnp.float32, param_dtype=None, mesh=None, rules=None,
                  layout: str | None = None) -> tuple[Transformer, ModelConfig, np.ndarray | None]:
    """The decoder of a causal LM's or a sequence classifier's HF checkpoint, and the classifier's
    score weight: `(Transformer, ModelConfig, score)`, the arguments and errors as `load_pretrained`'s.

    A causal-LM checkpoint loads exactly as `load_pretrained` loads it, with `score` None. A
    sequence classifier (config.json's `architectures` is a `<Family>ForSequenceClassification`,
    as transformers' `save_pretrained` writes it) holds the decoder under the LM's names, its
    head as `score.weight` (`num_labels x D`, no bias) and no LM head: `score` is that tensor
    (float32), its shape checked against config.json's `num_labels` (or `id2label`; default 2,
    as in transformers) and `hidden_size`. Such a decoder has no unembedding of its own: it is
    built with `tie_word_embeddings=True` (the returned config says so), so nothing of the size
    of the vocabulary is read or allocated, and its LM logits (`Transformer.unembed`) would be
    the embedding's, not a trained LM head's: read it through a classification head.
    """
    if layout is not None:
        check_layout(layout)
    ckpt_dir = resolve_checkpoint_dir(path_or_hub_name)
    config = config_from_hf(ckpt_dir / "config.json")
    tensors = _open_shards(ckpt_dir)
    architecture = sequence_classifier_architecture(ckpt_dir)
    if architecture is None:
        return _load(ckpt_dir, config, tensors, frozenset(), dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                     rules=rules, layout=layout), config, None
    config = dataclasses.replace(config, tie_word_embeddings=True)
    expected = (_num_labels(ckpt_dir / "config.json"), config.hidden_size)
    file = tensors.get(SCORE_WEIGHT)
    if file is not None and file.shape(SCORE_WEIGHT) != expected:  # a missing one is named with the rest
        raise ValueError(f"tensor {SCORE_WEIGHT!r} in {file.path.name} has shape {file.shape(SCORE_WEIGHT)}, "
                         f"expected {expected} (num_labels x hidden_size) from config.json")
    model = _load(ckpt_dir, config, tensors, frozenset({SCORE_WEIGHT}), dtype=dtype, param_dtype=param_dtype,
                  mesh=mesh, rules=rules, layout=layout)
    return model, config, np.asarray(file.get(SCORE_WEIGHT), np.float32)


def sequence_classifier_architecture(ckpt_dir: Path) -> str | None:
    """The `<Family>ForSequenceClassification` that config.json's `architectures` names, or None
    (a causal LM, or no `architectures`)."""
    hf = json.loads((ckpt_dir / "config.json").read_text())  # valid: config_from_hf read it first
    architectures = hf.get("architectures")
    architectures = architectures if isinstance(architectures, list) else []
    names = [a for a in architectures if isinstance(a, str) and a.endswith(_SEQUENCE_CLASSIFIER)]
    return names[0] if names else None


def _num_labels(config_path: Path) -> int:
    """A sequence classifier's number of labels: config.json's `num_labels`, else the size of its
    `id2label`, else transformers' default, 2."""
    hf = json.loads(config_path.read_text())
    value = hf.get("num_labels", len(hf["id2label"]) if isinstance(hf.get("id2label"), dict) else 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{config_path}: num_labels={value!r} must be a positive int")
    return value


def _load(ckpt_dir: Path, config: ModelConfig, tensors: dict[str, SafetensorsFile], extra: frozenset[str], *,
          dtype, param_dtype, mesh, rules, layout) -> Transformer:
    """`Transformer(config)` with its weights from `tensors` (see `load_pretrained`); `extra`: the
    other tensors the checkpoint must hold, read by the caller."""
    backend = for_mesh(mesh)
    layout = backend.layout if layout is None else layout
    check_layout(layout)
    if layout == "per_layer" and backend.layout != "per_layer":
        warnings.warn(f"layout='per_layer' is read through a conditional per layer, which the {backend.platform} "
                      "backend does not run: loading the stacked layout instead", stacklevel=3)
        layout = "stacked"
    param_dtype = dtype if param_dtype is None else param_dtype
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                                  backend=backend))
    if mesh is not None and rules is None:
        from w2s_jax.parallel import inference_rules

        weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
        rules = inference_rules(weight_bytes, mesh)
    if mesh is not None:
        from w2s_jax.parallel.placement import check_head_split

        check_head_split(config, mesh, rules)
    maps = tensor_maps(config)
    missing = sorted(({m.hf_name for m in maps} | extra) - set(tensors))
    if missing:
        raise ValueError(f"checkpoint {ckpt_dir} is missing tensor(s) {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}")
    expected = {m.hf_name for m in maps} | optional_hf_names(config) | extra
    unexpected = sorted(n for n in tensors if n not in expected and not n.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"checkpoint {ckpt_dir} has unexpected tensor(s) {unexpected[:8]} for "
                         f"model_type={config.model_type!r} (is config.json right?)")
    graphdef, state = nnx.split(abstract)
    by_path: dict[tuple, list[TensorMap]] = defaultdict(list)
    for m in maps:
        by_path[m.path].append(m)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for path, variable in nnx.to_flat_state(state):
            if path not in by_path:
                raise ValueError(f"parameter {path} has no checkpoint mapping")
            _check_shapes(by_path[path], tensors)
            shape, axes = variable.get_value().shape, variable.get_metadata().get("logical_axes")
            if layout == "per_layer" and goes_per_layer(axes):
                set_per_layer(variable, _read_per_layer(by_path[path], tensors, shape, param_dtype, axes, pool, mesh, rules))
            else:  # one parameter in flight at a time
                variable.set_value(_put(_read(by_path[path], tensors, shape, param_dtype, pool), axes, mesh, rules))
    model = nnx.merge(graphdef, state)
    if mesh is not None:
        model.placed_on(mesh, rules)
    return model


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
    host = {path: stacked_host_value(params[path].get_value(), params[path].get_metadata().get("logical_axes"))
            for path in {m.path for m in maps}}
    for m in maps:
        tensors.append((m.hf_name, np.ascontiguousarray(m.to_hf(host[m.path]))))
    dtypes = {str(a.dtype) for _, a in tensors}
    write_safetensors(out_dir / "model.safetensors", tensors)
    hf_config = config_to_hf(config, dtype_name=dtypes.pop() if len(dtypes) == 1 else "float32")
    tmp = out_dir / ".config.json.partial"
    tmp.write_text(json.dumps(hf_config, indent=2) + "\n")
    os.replace(tmp, out_dir / "config.json")
    return out_dir
