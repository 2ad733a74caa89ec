"""The fine-tuning loop: shard, (resume), step, evaluate, checkpoint, stop on a non-finite loss.

A run is a pure function of (model init, data, config): batch i is fixed by the data seed, the
step is deterministic, and a checkpoint holds everything else (the trained weights, optimizer,
data position, PRNG key, step; the frozen weights are those of the model passed in, which the
run's identity fingerprints). So a run killed after step k and restarted with the same arguments resumes from
its last checkpoint and ends with the same parameters as an uninterrupted run. The checkpoint
directory records which run it belongs to (`run_identity.py`); restarting with another model,
data, config or loss raises `CheckpointMismatchError` instead of restoring the other run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from w2s_jax.parallel import ShardingRules, shard_batch, shard_model
from w2s_jax.train.checkpoint import Checkpointer
from w2s_jax.train.compute import check_params, platform_of, store_frozen_in
from w2s_jax.train.config import TrainConfig
from w2s_jax.train.data import SFTDataset
from w2s_jax.train.lora import LoRAWeight, apply_lora
from w2s_jax.train.losses import CrossEntropyToTokens, LossFn
from w2s_jax.train.run_identity import claim_directory, run_identity
from w2s_jax.train.step import learning_rate_schedule, make_eval_step, make_optimizer, make_train_step, trainable_filter

Callback = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass
class TrainResult:
    """What a run leaves behind besides the updated model."""

    step: int  # last completed optimizer step
    train_losses: dict[int, float]  # step -> training loss (steps run in THIS call)
    eval_losses: dict[int, float]  # step -> held-out loss
    optimizer: nnx.Optimizer  # final optimizer state


def _process_rows(batch: dict[str, np.ndarray], mesh: Mesh | None) -> dict[str, np.ndarray]:
    # Each host feeds its contiguous slice of the global batch (see w2s_jax.parallel.placement);
    # without a mesh every process trains on its own, on the whole batch.
    if mesh is None:
        return batch
    n, rank = jax.process_count(), jax.process_index()
    rows = next(iter(batch.values())).shape[0] // n
    return {k: v[rank * rows : (rank + 1) * rows] for k, v in batch.items()}


def _with_step(batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    # `step_B`: the optimizer step, as data (a loss's warm-up reads it without a recompile)
    rows = next(iter(batch.values())).shape[0]
    return {**batch, "step_B": np.full((rows,), step, np.int32)}


def _resume_line(directory: Path, step: int, total_steps: int) -> str:
    left = max(total_steps - step, 0)
    if left == 0:
        return f"resuming {directory} at step {step} of {total_steps}: already complete, 0 steps left"
    return f"resuming {directory} from step {step} of {total_steps} ({left} step{'s' * (left != 1)} left)"


def evaluate(
    model: nnx.Module,
    data: SFTDataset,
    *,
    eval_step: Callable,
    batch_size: int,
    mesh: Mesh | None = None,
    step: int = 0,
) -> float:
    """Held-out loss: per-batch losses averaged with weights = scored positions per batch.

    Each batch carries `step_B` = `step` (the step it is evaluated at), as training batches do.
    """
    total, weight = 0.0, 0.0
    for batch, _ in data.eval_batches(batch_size):
        batch = _with_step(batch, step)
        loss, count = eval_step(model, shard_batch(_process_rows(batch, mesh), mesh))
        total += float(loss) * float(count)
        weight += float(count)
    return total / max(weight, 1.0)


def train(
    model: nnx.Module,
    train_data: SFTDataset,
    *,
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    eval_data: SFTDataset | None = None,
    checkpoint_dir: str | Path | None = None,
    mesh: Mesh | None = None,
    rules: ShardingRules | None = None,
    callbacks: Sequence[Callback] = (),
    show_progress: bool = True,
    identity: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place for `config.total_steps` optimizer steps.

    Arguments:
      model: a `Transformer` (or any module with its call signature); the weights it trains are
        float32 masters. With `config.lora_rank` set, LoRA is added to `config.lora_targets` first
        (in place, the adapters float32), and with a 16-bit `config.compute_dtype` the frozen base
        is converted to it in place before the first step (load it in that dtype to skip its
        float32 copy). The model keeps its own activation dtype; only the steps compute in
        `config.compute_dtype`. Each step donates the arrays it updates and puts the new ones in
        the model and optimizer: hold no references to the old ones.
      loss_fn: the objective (default `CrossEntropyToTokens()`); see `losses.py`.
      checkpoint_dir: where to checkpoint. If it already holds checkpoints of the same run (same
        initial weights, model config, data, config, loss and `identity`) the run resumes from the
        latest and prints one line to stderr saying from which step (whatever `show_progress`:
        a resume that trains fewer steps, or none, is never silent). Pass the model as it was
        before training (e.g. freshly loaded): its initial weights identify the run.
      mesh, rules: shard the model and batches (None: single device).
      callbacks: called as `cb(step, metrics)` after each step (after its checkpoint); `metrics`:
        `loss`, `grad_norm` (before clipping), `lr` (the schedule's rate this update used),
        `tokens` (the step's non-padding tokens, over the whole batch) and, on `eval_every` steps,
        `eval_loss`.
      show_progress: show a progress bar.
      identity: JSON-serialisable fields stored with the checkpoints and compared on resume
        (e.g. the base checkpoint's path), on top of what `train` records itself.

    Raises FloatingPointError naming the step when the training loss is NaN/inf; the last good
    checkpoint is left on disk. Raises `CheckpointMismatchError` (a ValueError) naming every
    field that differs when `checkpoint_dir` holds checkpoints of another run, or checkpoints
    without a record of their run (written by an older version).
    """
    check_params(model, what="training")
    loss_fn = CrossEntropyToTokens() if loss_fn is None else loss_fn
    checkpointer = None
    if checkpoint_dir is not None:
        # Identify the run by the model as passed in (before LoRA and any restore) and check the
        # directory before touching the model, so a refused resume leaves it as it was.
        record = run_identity(model, train_data, config=config, loss_fn=loss_fn, identity=identity)
        checkpointer = Checkpointer(checkpoint_dir, max_to_keep=config.max_checkpoints)
        try:
            claim_directory(checkpointer.directory, record, steps=checkpointer.all_steps())
        except BaseException:
            checkpointer.close()
            raise
    lora_key, run_key = jax.random.split(jax.random.key(config.seed))
    if config.lora_rank is not None and not any(
        isinstance(node, LoRAWeight) for _, node in nnx.iter_graph(model)
    ):
        apply_lora(
            model,
            rank=config.lora_rank,
            alpha=config.lora_alpha,
            targets=config.lora_targets,
            key=lora_key,
        )
    store_frozen_in(model, trainable_filter(config), config.compute_dtype)
    shard_model(model, mesh, rules)
    optimizer = make_optimizer(model, config, loss_fn=loss_fn)
    shard_model(optimizer, mesh, rules)

    step, position, key = 0, 0, run_key
    if checkpointer is not None and checkpointer.latest_step() is not None:
        step, position, key = checkpointer.restore(model=model, optimizer=optimizer)
        if jax.process_index() == 0:
            print(_resume_line(checkpointer.directory, step, config.total_steps), file=sys.stderr,
                  flush=True)

    train_step = make_train_step(loss_fn, config, mesh=mesh, rules=rules, platform=platform_of(model, mesh))
    eval_step = make_eval_step(loss_fn, config)
    schedule = learning_rate_schedule(config)
    result = TrainResult(step=step, train_losses={}, eval_losses={}, optimizer=optimizer)

    def run_eval(at_step):
        if eval_data is not None and at_step not in result.eval_losses:
            result.eval_losses[at_step] = evaluate(
                model, eval_data, eval_step=eval_step, batch_size=config.batch_size, mesh=mesh,
                step=at_step,
            )

    def save(at_step):
        if checkpointer is not None and checkpointer.latest_step() != at_step:
            checkpointer.save(
                at_step, model=model, optimizer=optimizer, data_position=position, key=key
            )

    progress = tqdm(
        total=config.total_steps, initial=step, disable=not show_progress, desc="train"
    )
    try:
        while step < config.total_steps:
            batch = _with_step(train_data.batch(position, config.batch_size), step)
            metrics = train_step(model, optimizer, shard_batch(_process_rows(batch, mesh), mesh))
            step, position = step + 1, position + 1
            key = jax.random.fold_in(key, step)  # the run's key advances with every step
            metrics = {name: float(value) for name, value in metrics.items()}
            # the rate this update used (optax evaluates the schedule at the update count before it)
            # and the step's real tokens (every row of the global batch, padding left out)
            metrics["lr"] = float(schedule(step - 1))
            if "valid_BxT" in batch:
                metrics["tokens"] = float(np.sum(batch["valid_BxT"]))
            if not math.isfinite(metrics["loss"]):
                last = None if checkpointer is None else checkpointer.latest_step()
                raise FloatingPointError(
                    f"training loss is {metrics['loss']} at step {step}; stopped. "
                    f"Last good checkpoint: step {last}"
                    + ("" if checkpointer is None else f" in {checkpointer.directory}")
                )
            result.train_losses[step] = metrics["loss"]
            result.step = step
            if config.eval_every and step % config.eval_every == 0:
                run_eval(step)
                metrics["eval_loss"] = result.eval_losses.get(step, float("nan"))
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save(step)
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}")
            for callback in callbacks:
                callback(step, metrics)
        run_eval(step)
        save(step)
    finally:
        progress.close()
        if checkpointer is not None:
            checkpointer.close()
    return result
