"""From an experiment to what its stages run with: supervisors, inference settings, resources."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from w2s_jax.pipeline.config import ExperimentConfig
from w2s_jax.pipeline.models import ModelPool
from w2s_jax.pipeline.refs import Inference, LabelFile, Model, Supervisor
from w2s_jax.pipeline.stage import Resources
from w2s_jax.pipeline.store import Store


def supervisors(config: ExperimentConfig, made_by: Mapping[str, str] | None = None) -> list[Supervisor]:
    """The experiment's weak supervisors, models first, each with a short unique name.
    ``made_by``: the keys of the stages that write some of the models and files, by path."""
    made_by = made_by or {}
    out = []
    for source, kind in [(m, "model") for m in config.models.weak] + \
                        [(f, "label_file") for f in config.models.weak_label_files]:
        stem = Path(source.rstrip("/")).name.lower() or "weak"
        if kind == "label_file":
            stem = Path(stem).stem or stem  # "w1-biased-0.30", not "w1-biased-0.30.jsonl"
        ref = (Model if kind == "model" else LabelFile)(source, made_by=made_by.get(source))
        out.append(Supervisor(name=f"w{len(out)}-{stem}", **{kind: ref}))
    return out


def inference_of(config: ExperimentConfig) -> Inference:
    """The settings that change answers (not batch sizes or streams: no result depends on them)."""
    m = config.models
    return Inference(generation=config.generation, chat=m.chat, dtype=m.dtype, seed=config.seed)


def make_resources(config: ExperimentConfig, store: Store, *, show_progress: bool = True) -> Resources:
    """The resources of a run of ``config``: its model pool, meshes and chunking."""
    import jax

    m = config.models
    mesh = train_mesh = rules = None
    if m.mesh is None and jax.process_count() > 1:
        from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh

        # several processes train one student together: FSDP over every process's devices
        train_mesh, rules = make_mesh(MeshConfig()), ShardingRules.fsdp()
    if m.mesh is not None:
        from w2s_jax.parallel import ShardingRules, make_mesh

        # inference: this process's devices (each process labels its own share of the units);
        # fine-tuning: every device of every process (one model trained together)
        mesh = make_mesh(m.mesh, devices=jax.local_devices())
        train_mesh = mesh if jax.process_count() == 1 else make_mesh(m.mesh)
        rules = ShardingRules.fsdp()
    # inference places each model under rules of its own size (w2s_jax.parallel.inference_rules:
    # tensor parallel or whole, not FSDP, which would gather every weight for every decoded token)
    pool = ModelPool(dtype=m.dtype, chat=m.chat, batch_size=m.batch_size, length_bucket=m.length_bucket,
                     max_loaded=m.max_loaded, mesh=mesh, streams=m.streams)
    return Resources(store, pool, chunk_size=config.chunk_size, mesh=mesh, train_mesh=train_mesh,
                     rules=rules, show_progress=show_progress)
