"""What a checkpoint directory belongs to, so a resume never restores another run's weights.

A run writes `run_identity.json` into its checkpoint directory before its first step: the base
model (a fingerprint of its initial weights and its config), the `TrainConfig`, the loss function,
a fingerprint of the training data, and optional caller-supplied fields. A later `train` call on
the same directory resumes only if all of them are equal; otherwise it raises
`CheckpointMismatchError` naming each field that differs. Orbax checkpoints with no identity file
(written before this check existed) are refused too: nothing says what they belong to.

The weights fingerprint is sha256 over every parameter's path, shape, dtype and the exact bytes of
`SAMPLES` evenly spaced elements of the flattened array (all of them for smaller arrays). The
elements are gathered on the devices holding the array, so only a few KiB per parameter reach the
host, whatever the model's size or sharding; a gather moves bits without arithmetic, so the
fingerprint is the same on any mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from w2s_jax.atomic_write import atomic_write_text

IDENTITY_FILE = "run_identity.json"
FORMAT = "w2s_jax.run_identity/2"  # 2: checkpoints hold the trained weights only
SAMPLES = 4096  # elements sampled per parameter: ~16 KiB of float32 each, exact bits


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds a run that is not this one (or says nothing about its run)."""


def _sample_indices(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    # Evenly spaced flat indices floor(i * n / k), i < k, as per-axis indices: each axis fits
    # int32 even where the flat size of a large matrix would not.
    n = math.prod(shape)
    k = min(SAMPLES, n)
    flat = (np.arange(k, dtype=np.int64) * n) // k
    return tuple(axis.astype(np.int32) for axis in np.unravel_index(flat, shape))


@functools.lru_cache(maxsize=None)
def _gather(out_sharding: NamedSharding | None):
    # One jitted gather per output placement; jit's cache then keys on shape, dtype and sharding.
    # A mesh-sharded parameter's sample is replicated, so every host can read it.
    kwargs = {} if out_sharding is None else {"out_shardings": out_sharding}
    return jax.jit(lambda x, indices: x[indices], **kwargs)


def sample_elements(x) -> np.ndarray:
    """The `SAMPLES` evenly spaced elements of `x` flattened (all of them if fewer), on the host."""
    if x.ndim == 0 or x.size == 0:
        return np.asarray(jax.device_get(x)).reshape(-1)
    indices = _sample_indices(tuple(x.shape))
    if not isinstance(x, jax.Array):
        return np.asarray(x)[indices]
    sharding = x.sharding
    out = NamedSharding(sharding.mesh, P()) if isinstance(sharding, NamedSharding) else None
    sample = _gather(out)(x, indices)
    return np.asarray(sample.addressable_data(0))


def weights_fingerprint(model: nnx.Module) -> str:
    """sha256 (hex) over each `nnx.Param`'s path, shape, dtype and `sample_elements` bytes."""
    params = {
        "/".join(str(part) for part in path): variable.get_value()
        for path, variable in nnx.iter_graph(model)
        if isinstance(variable, nnx.Param)
    }
    digest = hashlib.sha256()
    for path in sorted(params):
        x = params[path]
        header = [path, list(x.shape), str(x.dtype)]
        digest.update(json.dumps(header).encode() + b"\n")
        digest.update(np.ascontiguousarray(sample_elements(x)).tobytes())
    return digest.hexdigest()


def _jsonable(x: Any) -> Any:
    """Configs as JSON values: dataclasses and mappings as objects, sequences as lists."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return repr(x)


def describe_loss(loss_fn: Any) -> dict[str, Any]:
    """The loss function's class (or function) name and, for a dataclass, its fields' reprs.

    Other objects are identified by their class alone: their repr may hold a memory address.
    """
    owner = loss_fn if inspect.isfunction(loss_fn) or inspect.isclass(loss_fn) else type(loss_fn)
    fields = {}
    if dataclasses.is_dataclass(loss_fn) and not isinstance(loss_fn, type):
        fields = {f.name: repr(getattr(loss_fn, f.name)) for f in dataclasses.fields(loss_fn)}
    return {"name": f"{owner.__module__}.{owner.__qualname__}", "fields": fields}


def run_identity(
    model: nnx.Module,
    data,
    *,
    config,
    loss_fn: Any,
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The identity record of a run (a JSON object).

    Arguments:
      model: the model as passed to `train`, before LoRA and before any restore.
      data: the training `SFTDataset` (its `fingerprint()`).
      config: the `TrainConfig`.
      loss_fn: the objective.
      identity: caller-supplied JSON-serialisable fields (e.g. the base checkpoint's path).

    Returns a dict that survives a JSON round trip unchanged.
    """
    caller = dict(identity or {})
    for key, value in caller.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"train(identity=...) field {key!r} is not JSON-serialisable: {err}") from None
    model_config = getattr(model, "config", None)
    record = {
        "format": FORMAT,
        "base_model": {
            "weights_sha256": weights_fingerprint(model),
            "config": _jsonable(model_config) if dataclasses.is_dataclass(model_config) else None,
        },
        "train_config": _jsonable(config),
        "loss_fn": describe_loss(loss_fn),
        "data_sha256": data.fingerprint(),
        "identity": caller,
    }
    return json.loads(json.dumps(record))


def _same(a: Any, b: Any) -> bool:
    # Compared as canonical JSON text, so NaN equals NaN and key order is irrelevant.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _field_differences(label: str, stored: Any, current: Any) -> list[str]:
    stored, current = stored or {}, current or {}
    out = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if not _same(old, new):
            out.append(f"{label}: {key} {json.dumps(old)} (checkpoint) != {json.dumps(new)} (this run)")
    return out


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per field of `current` that differs from `stored`; empty when they match."""
    if stored.get("format") != current["format"]:
        return [f"identity format {stored.get('format')!r} is not {current['format']!r}"]
    out = []
    old_model, new_model = stored.get("base_model") or {}, current["base_model"]
    if old_model.get("weights_sha256") != new_model["weights_sha256"]:
        out.append(
            f"base model weights differ (fingerprint {str(old_model.get('weights_sha256'))[:12]} in "
            f"the checkpoint, {new_model['weights_sha256'][:12]} in this run)"
        )
    out += _field_differences("model config", old_model.get("config"), new_model["config"])
    out += _field_differences("training config", stored.get("train_config"), current["train_config"])
    old_loss, new_loss = stored.get("loss_fn"), current["loss_fn"]
    if not _same(old_loss, new_loss):
        out.append(f"loss function: {json.dumps(old_loss)} (checkpoint) != {json.dumps(new_loss)} (this run)")
    if stored.get("data_sha256") != current["data_sha256"]:
        out.append(
            f"data differs (fingerprint {str(stored.get('data_sha256'))[:12]} in the checkpoint, "
            f"{current['data_sha256'][:12]} in this run)"
        )
    out += _field_differences("identity", stored.get("identity"), current["identity"])
    return out


def write_identity(directory: Path, record: Mapping[str, Any]) -> None:
    """Write `record` to `directory / IDENTITY_FILE` atomically (temp file, fsync, rename)."""
    atomic_write_text(Path(directory) / IDENTITY_FILE, json.dumps(record, indent=1, sort_keys=True))


def claim_directory(directory: str | Path, record: Mapping[str, Any], *, steps: list[int]) -> None:
    """Check that `directory` belongs to the run `record`, or make it so.

    With checkpoints on disk (`steps` non-empty) the stored identity must equal `record`; without,
    the directory is (re)claimed: process 0 writes `record`, replacing any identity of a run that
    died before its first checkpoint (there are no weights of it to mix up).

    Raises CheckpointMismatchError naming every field that differs, or saying that the identity
    file is missing or unreadable.
    """
    directory = Path(directory).absolute()
    path = directory / IDENTITY_FILE
    fresh = f"Delete {directory} or pass another checkpoint_dir to start a fresh run."
    if not steps:
        if jax.process_index() == 0:
            write_identity(directory, record)
        return
    if not path.exists():
        raise CheckpointMismatchError(
            f"{directory} holds checkpoints (steps {steps}) but no {IDENTITY_FILE}: they were "
            f"written by an older version of w2s-jax, so nothing says which model, data and config "
            f"they belong to, and they are not resumed. {fresh}"
        )
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointMismatchError(f"cannot read {path}: {err}. {fresh}") from None
    if not isinstance(stored, dict):
        raise CheckpointMismatchError(f"{path} is not a JSON object. {fresh}")
    diffs = differences(stored, record)
    if diffs:
        lines = "\n".join(f"  - {line}" for line in diffs)
        raise CheckpointMismatchError(
            f"{directory} holds checkpoints (steps {steps}) of another run; this run differs in:\n"
            f"{lines}\n{fresh}"
        )
