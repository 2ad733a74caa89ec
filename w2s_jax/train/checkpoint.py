"""Atomic checkpoints of a run with orbax: trained weights, optimizer state, data position, PRNG
key, step.

A checkpoint holds the model's weights that the optimizer updates (`optimizer.wrt`: every
parameter for full fine-tuning, the adapters alone for LoRA), not the frozen ones: those are
restored by loading the base model again, and the run's identity (`run_identity.py`: a fingerprint
of the base weights) is what makes `train` refuse to resume onto another base. A LoRA checkpoint
of a 7B model is then megabytes, not the base's 15-30 GB again.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact. Arrays are restored with the shardings of the
live model/optimizer they are loaded into, so a checkpoint resumes on any mesh.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from flax.nnx import filterlib


def _variables(node, wrt=...) -> dict[tuple[str, ...], nnx.Variable]:
    selected = filterlib.to_predicate(wrt)
    return {
        tuple(str(p) for p in path): v
        for path, v in nnx.iter_graph(node)
        if isinstance(v, nnx.Variable) and isinstance(v.get_value(), jax.Array) and selected(path, v)
    }


def _nest(flat: dict[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = leaf
    return tree


def _flatten(tree: dict, prefix=()) -> dict[tuple[str, ...], object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


class Checkpointer:
    """Saves and restores training state under `directory` (one subdirectory per step)."""

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every complete checkpoint on disk."""
        return list(self.manager.all_steps())

    def save(self, step: int, *, model, optimizer, data_position: int, key: jax.Array) -> None:
        """Write one checkpoint (the weights `optimizer` trains, not the frozen ones) and wait
        until it is on disk."""
        arrays = {
            "model": _nest({p: v.get_value() for p, v in _variables(model, optimizer.wrt).items()}),
            "optimizer": _nest({p: v.get_value() for p, v in _variables(optimizer).items()}),
            # host data: a device array of one process cannot be saved by several
            "key": np.asarray(jax.random.key_data(key)),
        }
        meta = {"step": step, "data_position": data_position}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
            ),
        )
        self.manager.wait_until_finished()

    def restore(self, *, model, optimizer, step: int | None = None) -> tuple[int, int, jax.Array]:
        """Load a checkpoint (default: the latest) into `model`'s trained weights and `optimizer`
        in place; `model`'s frozen weights are left as they are (the caller loaded the base).

        Returns (step, data_position, key).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        live = {"model": _variables(model, optimizer.wrt), "optimizer": _variables(optimizer)}

        def abstract(v: nnx.Variable):
            x = v.get_value()
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)

        target = {name: _nest({p: abstract(v) for p, v in vs.items()}) for name, vs in live.items()}
        # the key data's shape/dtype come from the key type of the run
        shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
        target["key"] = np.zeros(shape.shape, shape.dtype)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            ),
        )
        arrays, meta = restored["arrays"], restored["meta"]
        for name, variables in live.items():
            values = _flatten(arrays[name])
            missing = set(variables) - set(values)
            if missing:
                raise KeyError(f"checkpoint step {step} lacks {name} arrays {sorted(missing)[:3]}")
            for path, variable in variables.items():
                variable.set_value(values[path])
        return int(meta["step"]), int(meta["data_position"]), jax.random.wrap_key_data(arrays["key"])

    def close(self) -> None:
        """Release the manager's resources."""
        self.manager.close()
