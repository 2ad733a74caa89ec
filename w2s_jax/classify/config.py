"""The classification experiment file (``kind = "classification"``): typed, frozen, checked.

::

    kind = "classification"
    name = "sciq-qwen"
    seeds = [0, 1, 2]                 # each seed: its own data draw, split, training order

    [task]                            # a stored dataset configuration (w2s_jax.classify.datasets)
    dataset = "sciq"                  # sciq, boolq, cosmos-qa, anthropic-hh, amazon-polarity, text-label
    n_train = 4000                    # balanced training items (half A: weak model, half B: students)
    n_test = 1000                     # balanced test items

    [models]                          # every weak x strong pair is run (a heat map of PGR)
    weak = ["Qwen/Qwen2.5-0.5B"]
    strong = ["Qwen/Qwen2.5-7B"]

    [train]                           # w2s_jax.train.TrainConfig: every classifier's fine-tuning;
                                      # max_len: tokens per item (longer ones lose their start)
    lora_rank = 8                     # LoRA; leave out for full fine-tuning
    [losses]                          # students on the weak soft labels, one per loss
    run = ["cross_entropy", "aux_confidence"]  # w2s_jax.train.binary_losses.BINARY_LOSSES
    [losses.aux_confidence]           # a loss's own options
    warmup_frac = 0.2
    threshold = "rolling_buffer"      # or "per_batch"
    buffer_size = 32
    [repair.knn]                      # label repair on the strong model's cached features
    probe = "knn"                     # a probe of w2s_jax.core.probes: "knn" or "logistic"
    mode = "relabel"                  # or "filter"
    [icl]                             # in-context refinement of the weak labels by the strong model
    demos = 4                         # weak-labelled demonstrations per prompt (0: off)
    [strong_to_strong]                # the strong model relabels half B, one half from the other
    rounds = 1

Also: ``[weak_train]`` (the weak models' TrainConfig over ``[train]``), ``models.mesh`` (shard
over this machine's devices), ``[report]``, and ``[concept_world]`` (the items and the models made
from the concept world: ``w2s_jax.classify.concept``). Relative paths are relative to the current
working directory; an unknown key is an error naming the file, the table and the closest valid key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from w2s_jax.classify.datasets import Format, dataset_format
from w2s_jax.pipeline.config import (
    ExperimentError,
    ReportConfig,
    build_dataclass,
    check_keys,
    check_train_numbers,
    read_experiment_file,
)

KIND = "classification"
PROBES = ("knn", "logistic")  # w2s_jax.core.probes: KNNProbe, LogisticProbe
REPAIR_MODES = ("relabel", "filter")
THRESHOLDS = ("per_batch", "rolling_buffer")  # the auxiliary confidence loss's hardening threshold


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the items come from and how many."""

    format: Format  # the dataset's stored configuration (with the file's options)
    train: str  # a .json/.jsonl/.csv/.parquet file or a Hub dataset name
    test: str
    train_split: str = "train"  # split names inside a Hub dataset
    test_split: str = "test"
    hub_config: str | None = None
    max_rows: int = 0  # rows read from each source before balancing (0: all)
    n_train: int = 0  # balanced training items kept (0: all); half A + half B
    n_test: int = 0  # balanced test items kept (0: all)
    weak_fraction: float = 0.5  # the share of training items in half A (the weak model's)

    def __post_init__(self):
        for name in ("max_rows", "n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"task.{name} must be an int >= 0, got {value!r}")
        if not 0 < self.weak_fraction < 1:
            raise ValueError(f"task.weak_fraction must be in (0, 1), got {self.weak_fraction!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    """The weak and strong models (checkpoint directories or Hub names) and inference settings."""

    weak: tuple[str, ...]
    strong: tuple[str, ...]
    batch_size: int = 16  # rows per inference batch (features, zero-shot, predictions)
    dtype: str = "float32"  # inference compute dtype: "float32" or "bfloat16"
    # Shard over this process's devices, e.g. {fsdp = -1}: w2s_jax.parallel.MeshConfig fields (every
    # classifier trained FSDP, inference batches split over data x fsdp). None: one device.
    mesh: Any = None
    zero_shot: bool = True  # the strong model answers zero-shot (false for models without the answer tokens)

    def __post_init__(self):
        if not isinstance(self.zero_shot, bool):
            raise ValueError(f"models.zero_shot must be true or false, got {self.zero_shot!r}")
        for name in ("weak", "strong"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not value or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"models.{name} must name at least one model, got {value!r}")
            if len(set(value)) != len(value):
                raise ValueError(f"models.{name} names a model twice: {value!r}")
            object.__setattr__(self, name, value)
        for name in ("batch_size",):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"models.{name} must be an int >= 1, got {value!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"models.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.mesh is not None and not hasattr(self.mesh, "resolve"):
            from w2s_jax.parallel import MeshConfig

            if not isinstance(self.mesh, Mapping) or set(self.mesh) - {"data", "fsdp", "tp"}:
                raise ValueError(f"models.mesh must be a table of data, fsdp, tp sizes like {{fsdp = -1}}, "
                                 f"got {self.mesh!r}")
            object.__setattr__(self, "mesh", MeshConfig(**{"data": 1, "fsdp": 1, "tp": 1, **self.mesh}))

    def pairs(self) -> list[tuple[int, int]]:
        """Every (weak, strong) index pair of two different models."""
        return [(w, s) for w in range(len(self.weak)) for s in range(len(self.strong))
                if self.weak[w] != self.strong[s]]


@dataclasses.dataclass(frozen=True)
class LossChoice:
    """A student loss by name (``BINARY_LOSSES``) and its options."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, total_steps: int):
        """The loss strategy (``total_steps`` given to a loss that has such a field; a
        ``threshold = "per_batch"`` or ``"rolling_buffer"`` with ``buffer_size`` made its object)."""
        from w2s_jax.train.binary_losses import BINARY_LOSSES, PerBatch, RollingBuffer

        cls = BINARY_LOSSES[self.name]
        options = dict(self.options)
        fields = {f.name for f in dataclasses.fields(cls)}
        if "total_steps" in fields and "total_steps" not in options:
            options["total_steps"] = total_steps
        if "threshold" in fields and ("threshold" in options or "buffer_size" in options):
            kind, size = options.pop("threshold", "per_batch"), options.pop("buffer_size", None)
            if kind not in THRESHOLDS:
                raise ValueError(f"threshold must be one of {THRESHOLDS}, got {kind!r}")
            if kind == "per_batch" and size is not None:
                raise ValueError("buffer_size is for threshold = \"rolling_buffer\"")
            options["threshold"] = PerBatch() if kind == "per_batch" else RollingBuffer(**(
                {} if size is None else {"size": size}))
        return cls(**options)

    @staticmethod
    def option_names(cls) -> set[str]:
        """The options a loss class takes in an experiment file."""
        names = {f.name for f in dataclasses.fields(cls)} - {"total_steps"}
        return names | {"buffer_size"} if "threshold" in names else names


@dataclasses.dataclass(frozen=True)
class RepairChoice:
    """Label repair: a probe fitted on the strong model's features of half B with the weak labels,
    which then relabels half B or keeps the items where it agrees with the weak labels."""

    name: str
    probe: str = "logistic"
    mode: str = "relabel"
    options: tuple[tuple[str, Any], ...] = ()  # the probe's own options (k, metric, l2, ...)
    repair_options: tuple[tuple[str, Any], ...] = ()  # n_folds, and fraction (relabel) or contamination (filter)

    def make_probe(self):
        """The probe object (``w2s_jax.core.probes``) with its options."""
        return probe_class(self.probe)(**dict(self.options))


def probe_class(name: str):
    from w2s_jax.core.probes import KNNProbe, LogisticProbe

    return {"knn": KNNProbe, "logistic": LogisticProbe}[name]


# the options of w2s_jax.core.label_repair's relabel and filter_by_probe a repair table may set
REPAIR_OPTIONS = {"relabel": ("n_folds", "fraction"), "filter": ("n_folds", "contamination")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ICLConfig:
    """In-context refinement of half B's weak labels by the strong model."""

    demos: int = 0  # weak-labelled demonstrations per prompt (0: no refinement)

    def __post_init__(self):
        if not isinstance(self.demos, int) or isinstance(self.demos, bool) or self.demos < 0:
            raise ValueError(f"icl.demos must be an int >= 0, got {self.demos!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrongToStrongConfig:
    """Strong-to-strong rounds: the strong model, trained on one half of B's current labels,
    relabels the other half (both ways); the joined labels are the next round's."""

    rounds: int = 0  # rounds after the weak labels (0: none)

    def __post_init__(self):
        if not isinstance(self.rounds, int) or isinstance(self.rounds, bool) or self.rounds < 0:
            raise ValueError(f"strong_to_strong.rounds must be an int >= 0, got {self.rounds!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassificationConfig:
    """One classification experiment (see the module docstring)."""

    name: str
    seeds: tuple[int, ...]
    data: DataConfig
    models: ModelsConfig
    train: Any  # w2s_jax.train.TrainConfig of every fine-tuning (its seed is each run's seed)
    weak_train: Any  # the weak models' TrainConfig ([weak_train] overrides [train])
    losses: tuple[LossChoice, ...]  # the students' losses; the first also trains repaired/refined students
    repair: tuple[RepairChoice, ...] = ()
    icl: ICLConfig = ICLConfig()
    strong_to_strong: StrongToStrongConfig = StrongToStrongConfig()
    concept_world: Any = None  # w2s_jax.classify.concept.ConceptWorldData: items and models made here
    report: ReportConfig = ReportConfig()
    chunk_size: int = 64  # rows per appended (resumable) chunk of an inference stage
    source: str = ""


_TOP = ("kind", "name", "description", "seeds", "chunk_size", "task", "models", "train", "weak_train", "losses",
        "repair", "icl", "strong_to_strong", "concept_world", "report")
_TASK = ("dataset", "train", "test", "train_split", "test_split", "hub_config", "max_rows", "n_train", "n_test",
         "weak_fraction")


def _data(table: Mapping[str, Any], source: str) -> DataConfig:
    if "dataset" not in table:
        raise ExperimentError(f"{source}: [task] needs dataset = one of the stored configurations "
                              "(sciq, boolq, cosmos-qa, anthropic-hh, amazon-polarity, text-label)")
    options = {k: v for k, v in table.items() if k not in _TASK}
    try:
        fmt = dataset_format(str(table["dataset"]), {k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in options.items()})
    except (KeyError, ValueError, TypeError) as error:
        raise ExperimentError(f"{source}: [task]: {error.args[0] if error.args else error}") from None
    fixed = {"format": fmt}
    for key, default in (("train", fmt.hub), ("test", fmt.hub), ("train_split", fmt.train_split),
                         ("test_split", fmt.test_split), ("hub_config", fmt.hub_config)):
        fixed[key] = table.get(key, default)
    for key in ("train", "test"):
        if not fixed[key]:
            raise ExperimentError(f"{source}: [task] dataset {fmt.name!r} has no Hub name: set task.{key} "
                                  "to a data file")
    rest = {k: v for k, v in table.items() if k in _TASK and k not in fixed and k != "dataset"}
    return build_dataclass(DataConfig, rest, "[task]", source, **fixed)


def _choices(table: Any, where: str, source: str, build) -> tuple:
    if not isinstance(table, Mapping):
        raise ExperimentError(f"{source}: [{where}] must be a table, got {table!r}")
    names = table.get("run", [n for n in table if n != "run"])
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ExperimentError(f"{source}: {where}.run must be a list of names, got {names!r}")
    # tables of entries left out of run (e.g. by --set) are kept for later runs, unused
    out = []
    for name in names:
        options = table.get(name, {})
        if not isinstance(options, Mapping):
            raise ExperimentError(f"{source}: [{where}.{name}] must be a table, got {options!r}")
        out.append(build(str(name), dict(options)))
    return tuple(out)


def _loss(source: str):
    def build(name: str, options: dict) -> LossChoice:
        from w2s_jax.train.binary_losses import BINARY_LOSSES

        if name not in BINARY_LOSSES:
            raise ExperimentError(f"{source}: unknown loss {name!r}; losses: {', '.join(sorted(BINARY_LOSSES))}")
        fields = LossChoice.option_names(BINARY_LOSSES[name])
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ExperimentError(f"{source}: [losses.{name}] has no option {unknown[0]!r}; options: "
                                  f"{', '.join(sorted(fields)) or 'none'}")
        try:
            choice = LossChoice(name, tuple(sorted((k, _frozen(v)) for k, v in options.items())))
            choice.build(total_steps=10)  # the loss's own checks, now
        except (TypeError, ValueError) as error:
            raise ExperimentError(f"{source}: [losses.{name}]: {error}") from None
        except KeyError as error:
            raise ExperimentError(f"{source}: [losses.{name}]: {error.args[0]}") from None
        return choice

    return build


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _repair(source: str):
    def build(name: str, options: dict) -> RepairChoice:
        probe, mode = options.pop("probe", "logistic"), options.pop("mode", "relabel")
        if probe not in PROBES:
            raise ExperimentError(f"{source}: [repair.{name}] probe must be one of {PROBES}, got {probe!r}")
        if mode not in REPAIR_MODES:
            raise ExperimentError(f"{source}: [repair.{name}] mode must be one of {REPAIR_MODES}, got {mode!r}")
        fields = {f.name for f in dataclasses.fields(probe_class(probe))}
        unknown = sorted(set(options) - fields - set(REPAIR_OPTIONS[mode]))
        if unknown:
            raise ExperimentError(f"{source}: [repair.{name}] has no option {unknown[0]!r}; options: probe, mode, "
                                  f"{', '.join(sorted(fields | set(REPAIR_OPTIONS[mode])))}")
        probe_options = tuple(sorted((k, _frozen(v)) for k, v in options.items() if k in fields))
        repair_options = tuple(sorted((k, v) for k, v in options.items() if k not in fields))
        choice = RepairChoice(name, probe, mode, probe_options, repair_options)
        try:
            choice.make_probe()
        except (TypeError, ValueError) as error:
            raise ExperimentError(f"{source}: [repair.{name}]: {error}") from None
        return choice

    return build


def _train(table: Mapping[str, Any], where: str, source: str):
    from w2s_jax.train import TrainConfig

    train = build_dataclass(TrainConfig, table, where, source)
    check_train_numbers(train, source)
    return train


def classification_from_dict(raw: Mapping[str, Any], *, source: str = "<experiment>",
                             default_name: str = "classification") -> ClassificationConfig:
    """The typed experiment of a parsed TOML document (see the module docstring)."""
    check_keys(raw, _TOP, "the top level", source)
    if raw.get("kind") != KIND:
        raise ExperimentError(f"{source}: kind must be {KIND!r}, got {raw.get('kind')!r}")
    concept = None
    if raw.get("concept_world") is not None:
        from w2s_jax.classify.concept import concept_world_from_table

        concept = concept_world_from_table(raw["concept_world"], source)
    if concept is not None:  # the world makes the items and the models
        from w2s_jax.classify.concept import STRONG, WEAK

        for key in ("task", "models"):
            if key in raw and set(raw[key]) & {"dataset", "train", "test", "weak", "strong"}:
                raise ExperimentError(f"{source}: [{key}] names data or models, but [concept_world] makes them")
        raw = {**raw, "task": {**dict(raw.get("task", {})), "dataset": "text-label", "train": "concept-world",
                               "test": "concept-world"},
               "models": {"zero_shot": False, **dict(raw.get("models", {})), "weak": [WEAK], "strong": [STRONG]}}
    for table in ("task", "models", "losses"):
        if table not in raw:
            raise ExperimentError(f"{source}: missing [{table}] table")
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in seeds)):
        raise ExperimentError(f"{source}: seeds must be a list of different ints >= 0, got {seeds!r}")
    train_table = dict(raw.get("train", {}))
    weak_table = {**train_table, **dict(raw.get("weak_train", {}))}
    losses = _choices(raw["losses"], "losses", source, _loss(source))
    if not losses:
        raise ExperimentError(f"{source}: losses.run must name at least one loss")
    chunk_size = raw.get("chunk_size", 64)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ExperimentError(f"{source}: chunk_size must be an int >= 1, got {chunk_size!r}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name:
        raise ExperimentError(f"{source}: name must be a non-empty string without '/', got {name!r}")
    config = ClassificationConfig(
        name=name, seeds=tuple(seeds), data=_data(dict(raw["task"]), source),
        models=build_dataclass(ModelsConfig, raw["models"], "[models]", source),
        train=_train(train_table, "[train]", source), weak_train=_train(weak_table, "[weak_train]", source),
        losses=losses, repair=_choices(raw.get("repair", {}), "repair", source, _repair(source)),
        icl=build_dataclass(ICLConfig, raw.get("icl", {}), "[icl]", source), concept_world=concept,
        strong_to_strong=build_dataclass(StrongToStrongConfig, raw.get("strong_to_strong", {}),
                                         "[strong_to_strong]", source),
        report=build_dataclass(ReportConfig, raw.get("report", {}), "[report]", source),
        chunk_size=chunk_size, source=source)
    if concept is not None and config.models.zero_shot:
        raise ExperimentError(f"{source}: the concept world's vocabulary has no answer tokens: set "
                              "models.zero_shot = false (no zero-shot stage)")
    return config


def load_classification(path: str | Path, *, overrides: Sequence[str] = ()) -> ClassificationConfig:
    """Reads and checks a classification experiment file; ``overrides``: ``--set`` items."""
    raw, source = read_experiment_file(path, overrides)
    return classification_from_dict(raw, source=source, default_name=Path(path).stem)
