"""The optimizer and the jitted train / eval steps (one compile each per run).

Mixed precision: the trained weights stay float32 (the optimizer's master copy); the step casts
them to `TrainConfig.compute_dtype` and computes in it (`compute.py`), so gradients flow back to
the float32 masters through the cast. Gradient accumulation: the batch is split into
`grad_accum_steps` equal micro-batches, scanned, and their losses and gradients averaged with
weights proportional to the number of positions each micro-batch scores, before ONE optimizer
update: exactly the big batch's token-mean loss and gradient, however the scored tokens fall
across micro-batches.

Memory: the jitted train step is a function of the trained weights, the optimizer state, the
frozen weights and the batch that returns only the new trained weights, optimizer state and two
scalars, and it donates the first two, so they are updated in place: the step holds no second
copy of the model, and its outputs are as large as what it trains. The eval step returns the
loss and the number of positions it scored.

A `StatefulLoss` (`binary_losses.py`, e.g. a rolling buffer of recent predictions) keeps its state
in the optimizer as a `LossState` variable (`make_optimizer(..., loss_fn=...)`): donated and
updated with the optimizer state, scanned through the micro-batches in order, and checkpointed
with it, so a resumed run continues from the same state.
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from w2s_jax.parallel import ShardingRules, constrain_model
from w2s_jax.train.binary_losses import initial_loss_state
from w2s_jax.train.compute import computing_in
from w2s_jax.train.config import TrainConfig
from w2s_jax.train.losses import LossFn, loss_from_hidden, num_scored


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then cosine decay to end_lr_ratio * peak at total_steps."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps,
        end_value=config.learning_rate * config.end_lr_ratio,
    )


def trainable_filter(config: TrainConfig):
    """`nnx.LoRAParam` for LoRA runs, `nnx.Param` (everything) for full fine-tuning."""
    return nnx.LoRAParam if config.lora_rank is not None else nnx.Param


def optimizer_transform(config: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on the warmup-cosine schedule.

    Weight decay applies to every trainable array (keep it 0 for full fine-tuning of models whose
    norm weights should not shrink). Cached on the optimizer's fields: the transform is static
    data of the optimizer, so runs that share them (e.g. a resumed run) share the compiled step.
    """
    fields = ("learning_rate", "warmup_steps", "total_steps", "end_lr_ratio", "weight_decay",
              "adam_b1", "adam_b2", "grad_clip_norm")
    return _transform(tuple((name, getattr(config, name)) for name in fields))


@functools.lru_cache(maxsize=16)
def _transform(fields: tuple) -> optax.GradientTransformation:
    config = types.SimpleNamespace(**dict(fields))  # the optimizer's fields of a TrainConfig
    transforms = []
    if config.grad_clip_norm is not None:
        transforms.append(optax.clip_by_global_norm(config.grad_clip_norm))
    transforms.append(
        optax.adamw(
            learning_rate_schedule(config),
            b1=config.adam_b1,
            b2=config.adam_b2,
            weight_decay=config.weight_decay,
        )
    )
    return optax.chain(*transforms)


class LossState(nnx.Variable):
    """The state a `StatefulLoss` carries from step to step, held by the optimizer."""


def make_optimizer(model: nnx.Module, config: TrainConfig, *, loss_fn: LossFn | None = None) -> nnx.Optimizer:
    """An `nnx.Optimizer` of `optimizer_transform(config)` over the trainable parameters.

    With a `StatefulLoss` whose `init_state()` is not None, the optimizer also holds that state as
    `optimizer.loss_state` (a `LossState`), which the train step updates and checkpoints save.
    """
    optimizer = nnx.Optimizer(model, optimizer_transform(config), wrt=trainable_filter(config))
    state = initial_loss_state(loss_fn)
    if state is not None:
        optimizer.loss_state = LossState(jnp.asarray(state))
    return optimizer


def _cast_floats(tree, dtype):
    if dtype == jnp.float32:
        return tree
    return jax.tree.map(
        lambda x: x.astype(dtype) if x.dtype == jnp.float32 else x, tree
    )


def _forward_loss(graphdef, trainable, frozen, batch, loss_fn: LossFn, compute_dtype, remat=None,
                  loss_state=None):
    """The loss of `batch`; with `loss_state` (a `StatefulLoss`'s), `(loss, new state)`."""
    model = nnx.merge(
        graphdef, _cast_floats(trainable, compute_dtype), _cast_floats(frozen, compute_dtype)
    )
    computing_in(model, compute_dtype, remat)
    h_BxTxD, _ = model.hidden(
        batch["tokens_BxT"], positions_BxT=batch["positions_BxT"], valid_BxT=batch["valid_BxT"]
    )
    if loss_state is not None:
        return loss_fn.with_state(model.unembed(h_BxTxD), batch, loss_state)
    # a PositionwiseLoss unembeds a chunk of positions at a time; any other loss gets all logits
    return loss_from_hidden(loss_fn, model, h_BxTxD, batch)


def accumulated_loss_and_grads(
    graphdef, trainable, frozen, batch, *, loss_fn: LossFn, accum: int, compute_dtype, remat=None
):
    """Token-weighted mean loss and gradient w.r.t. `trainable` over `accum` micro-batches of `batch`.

    Each micro-batch's mean loss is weighted by its number of scored positions (`num_scored`), so
    the result equals the loss and gradient of the whole batch at once.

    `graphdef, trainable, frozen` come from `nnx.split(model, wrt, ...)`. The micro-batches are
    scanned, so memory holds one micro-batch's activations at a time. The model computes in
    `compute_dtype` with the `remat` policy (`compute.computing_in`). A `StatefulLoss` is computed
    from its `init_state()` here; the train step carries its state (`loss_grads_and_state`).
    """
    loss, grads, _ = loss_grads_and_state(graphdef, trainable, frozen, batch, loss_fn=loss_fn, accum=accum,
                                          compute_dtype=compute_dtype, remat=remat,
                                          loss_state=initial_loss_state(loss_fn))
    return loss, grads


def loss_grads_and_state(
    graphdef, trainable, frozen, batch, *, loss_fn: LossFn, accum: int, compute_dtype, remat=None,
    loss_state=None,
):
    """`accumulated_loss_and_grads` and the loss's state after the batch (None without state).

    The state enters the first micro-batch and each micro-batch's new state the next, in order.
    """
    if next(iter(batch.values())).shape[0] % accum != 0:
        raise ValueError(f"batch of {next(iter(batch.values())).shape[0]} rows is not divisible "
                         f"into grad_accum_steps={accum} micro-batches")

    def micro_loss(trainable, micro, state):
        if state is None:
            return _forward_loss(graphdef, trainable, frozen, micro, loss_fn, compute_dtype, remat), None
        return _forward_loss(graphdef, trainable, frozen, micro, loss_fn, compute_dtype, remat, state)

    micro_batches = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

    def accumulate(carry, micro):
        sums, state = carry
        (loss, state), grads = jax.value_and_grad(micro_loss, has_aux=True)(trainable, micro, state)
        n = num_scored(micro).astype(jnp.float32)
        weighted = (loss * n, jax.tree.map(lambda g: g * n, grads), n)
        return (jax.tree.map(jnp.add, sums, weighted), jax.lax.stop_gradient(state)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trainable), jnp.zeros((), jnp.float32))
    ((loss_sum, grad_sum, n_sum), loss_state), _ = jax.lax.scan(accumulate, (zeros, loss_state), micro_batches)
    n_sum = jnp.maximum(n_sum, 1.0)
    return loss_sum / n_sum, jax.tree.map(lambda g: g / n_sum, grad_sum), loss_state


class TrainStep:
    """`step(model, optimizer, batch) -> {"loss", "grad_norm"}`, updating both in place.

    `step.jitted(graphdef, trainable, frozen, opt_graphdef, opt_state, batch)` is the compiled
    program: it returns `(trainable, opt_state, metrics)` and donates `trainable` and
    `opt_state`, so the arrays the model and optimizer held before a step are deleted by it (the
    call puts the new ones in their place). `step.arguments(model, optimizer, batch)` are its
    arguments for the live model, e.g. to lower it: `step.jitted.trace(*args).lower()`.
    """

    def __init__(self, loss_fn: LossFn, accum: int, compute_dtype: str, remat: str | None,
                 mesh: Mesh | None, rules: ShardingRules | None):
        dtype = jnp.dtype(compute_dtype)

        def train_step(graphdef, trainable, frozen, opt_graphdef, opt_state, batch):
            optimizer = nnx.merge(opt_graphdef, opt_state)
            carried = optimizer.loss_state if isinstance(getattr(optimizer, "loss_state", None), LossState) else None
            loss, grads, loss_state = loss_grads_and_state(
                graphdef, trainable, frozen, batch, loss_fn=loss_fn, accum=accum,
                compute_dtype=dtype, remat=remat, loss_state=None if carried is None else carried.get_value(),
            )
            model = nnx.merge(graphdef, trainable, frozen)
            optimizer.update(model, grads)
            if carried is not None:
                carried.set_value(loss_state)
            constrain_model(model, mesh, rules)
            constrain_model(optimizer, mesh, rules)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
            return nnx.state(model, optimizer.wrt), nnx.state(optimizer), metrics

        self.jitted = jax.jit(train_step, static_argnums=(0, 3), donate_argnums=(1, 4))

    @staticmethod
    def arguments(model: nnx.Module, optimizer: nnx.Optimizer, batch) -> tuple:
        """The jitted step's arguments for `model`, `optimizer` and `batch`."""
        graphdef, trainable, frozen = nnx.split(model, optimizer.wrt, ...)
        opt_graphdef, opt_state = nnx.split(optimizer)
        return graphdef, trainable, frozen, opt_graphdef, opt_state, batch

    def __call__(self, model: nnx.Module, optimizer: nnx.Optimizer, batch) -> dict[str, jax.Array]:
        trainable, opt_state, metrics = self.jitted(*self.arguments(model, optimizer, batch))
        nnx.update(model, trainable)
        nnx.update(optimizer, opt_state)
        return metrics


def make_train_step(
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    mesh: Mesh | None = None,
    rules: ShardingRules | None = None,
    platform: str | None = None,
) -> TrainStep:
    """The `TrainStep` of `config` (see its docstring): jitted, donating, updating in place.

    With `mesh`, the updated parameters and optimizer state are pinned to the `rules` shardings.
    `platform` ("cpu", "gpu", "tpu", ...; default: the mesh's, else JAX's default backend)
    resolves `config.remat`. The step is cached per (loss_fn, grad_accum_steps, compute_dtype,
    remat policy, mesh, rules), so runs with the same settings (e.g. a resumed run) share one
    compilation.
    """
    if platform is None:
        platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    return _maybe_cached(TrainStep, loss_fn, config.grad_accum_steps, config.compute_dtype,
                         config.remat_policy(platform), mesh, rules)


def _maybe_cached(builder, *args):
    try:
        hash(args)
    except TypeError:  # e.g. an unhashable loss object: build a fresh step
        return builder(*args)
    return _cached(builder, *args)


@functools.lru_cache(maxsize=16)
def _cached(builder, *args):
    return builder(*args)


class EvalStep:
    """`step(model, batch) -> (loss, number of scored positions)`, no update.

    `step.jitted(graphdef, params, rest, batch)` is the compiled program; it returns the two
    scalars and nothing else (`step.arguments(model, batch)` are its arguments).
    """

    def __init__(self, loss_fn: LossFn, compute_dtype: str):
        dtype = jnp.dtype(compute_dtype)

        def eval_step(graphdef, params, rest, batch):
            loss = _forward_loss(graphdef, params, rest, batch, loss_fn, dtype)
            return loss, num_scored(batch)

        self.jitted = jax.jit(eval_step, static_argnums=0)

    @staticmethod
    def arguments(model: nnx.Module, batch) -> tuple:
        """The jitted step's arguments for `model` and `batch`."""
        return (*nnx.split(model, nnx.Param, ...), batch)

    def __call__(self, model: nnx.Module, batch) -> tuple[jax.Array, jax.Array]:
        return self.jitted(*self.arguments(model, batch))


def make_eval_step(loss_fn: LossFn, config: TrainConfig) -> EvalStep:
    """The `EvalStep` of `config` (jitted, no update; cached like `make_train_step`)."""
    return _maybe_cached(EvalStep, loss_fn, config.compute_dtype)
