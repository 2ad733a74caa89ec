"""The experiment file: typed, frozen configuration of one weak-to-strong run.

An experiment is a TOML file (read with ``tomllib``)::

    name = "gsm8k-qwen"               # the run's name (default: the file's stem)
    seed = 0                          # every PRNG key of the run is folded from this

    [task]                            # name + the task's own options (see `w2s list`)
    name = "math"

    [data]                            # where the rows come from (local files or hub names)
    train = "data/train.jsonl"
    test = "data/test.jsonl"

    [models]                          # checkpoint directories or hub names
    strong = "Qwen/Qwen2.5-7B-Instruct"
    weak = ["Qwen/Qwen2.5-0.5B-Instruct"]

    [methods]
    run = ["zero-shot", "naive", "icl-refine", "gold"]
    [methods.icl-refine]              # a method's own options
    batch = 5

    [generation]                      # answers: w2s_jax.inference.generation_settings.Generation
    [train]                           # fine-tuning: w2s_jax.train.TrainConfig fields
    [judge]                           # the judge's settings (tasks scored by a judge model)
    [report]                          # intervals

Relative paths are relative to the current working directory. Every table is checked against its
dataclass: an unknown key is an error naming the file, the table and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from w2s_jax.inference.generation_settings import Generation


TRUNCATE_POLICIES = ("none", "prompt-left")  # data.truncate


class ExperimentError(ValueError):
    """An experiment file or override that cannot run; the message names the file and key."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the task's rows come from."""

    train: str  # training split: a .json/.jsonl/.csv/.parquet file or a hub dataset name
    test: str  # held-out split (same kinds)
    train_split: str = "train"  # split name inside a hub dataset
    test_split: str = "test"  # split name inside a hub dataset
    hub_config: str | None = None  # hub dataset configuration (e.g. "main" for gsm8k)
    n_train: int = 0  # use the first n training rows (0 = all)
    n_test: int = 0  # use the first n test rows (0 = all)
    # hold the labels of the last n training rows (by index) out of fine-tuning: the student's eval
    # loss (metrics.jsonl, loss.png) is its loss on them (0 = none: every label is trained on)
    n_eval: int = 0
    # a training row longer than train.max_len: "none" refuses the run before it starts,
    # "prompt-left" keeps the end of its prompt (the count is logged); docs/pipeline.md
    truncate: str = "none"

    def __post_init__(self):
        for name in ("n_train", "n_test", "n_eval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"data.{name} must be an int >= 0, got {value!r}")
        if self.truncate not in TRUNCATE_POLICIES:
            raise ValueError(f"data.truncate must be one of {TRUNCATE_POLICIES}, got {self.truncate!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    """The models of the run: one strong student, one or more weak supervisors."""

    strong: str  # the strong model (and the student's initialisation)
    weak: tuple[str, ...] = ()  # weak supervisor models; one comparison per weak model
    weak_label_files: tuple[str, ...] = ()  # or weak labels from files: rows {"split", "index", "answer"}
    intermediate: tuple[str, ...] = ()  # the bootstrap chain between weak and strong, weakest first
    judge: str | None = None  # the judge model (tasks whose metric is a judgement)
    chat: bool = False  # apply each model's chat template (instruct models)
    dtype: str = "float32"  # compute dtype of inference: "float32" or "bfloat16"
    batch_size: int = 16  # rows per compiled inference batch
    length_bucket: int = 64  # prompt lengths are padded to a multiple of this
    max_loaded: int = 2  # models kept in memory at once (least recently used is dropped)
    # inference batches in flight at once, each on a thread (None: 2 on a multi-core CPU without a
    # mesh, else 1; w2s_jax.inference.streams). Like batch_size, it never changes a result.
    streams: int | None = None
    # Shard over a device mesh, e.g. {fsdp = -1} or {data = 2, fsdp = -1}: w2s_jax.parallel.MeshConfig
    # fields. Inference uses each process's own devices, fine-tuning all of them. None: one device.
    mesh: Any = None

    def __post_init__(self):
        if self.mesh is not None and not hasattr(self.mesh, "resolve"):
            from w2s_jax.parallel import MeshConfig

            if not isinstance(self.mesh, Mapping):
                raise ValueError(f"models.mesh must be a table like {{fsdp = -1}}, got {self.mesh!r}")
            unknown = set(self.mesh) - {"data", "fsdp", "tp"}
            if unknown:
                raise ValueError(f"models.mesh has unknown axis {sorted(unknown)[0]!r}; axes: data, fsdp, tp")
            # axes not named are 1 (MeshConfig's own default puts every device on fsdp)
            object.__setattr__(self, "mesh", MeshConfig(**{"data": 1, "fsdp": 1, "tp": 1, **self.mesh}))
        for name in ("weak", "weak_label_files", "intermediate"):  # a lone string means one entry
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))
        if not self.weak and not self.weak_label_files:
            raise ValueError("models.weak (or models.weak_label_files) must name at least one weak supervisor")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"models.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("batch_size", "length_bucket", "max_loaded", "streams"):
            value = getattr(self, name)
            if (value is not None or name != "streams") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"models.{name} must be an int >= 1, got {value!r}")
        if self.streams is not None and self.streams > 1 and self.mesh is not None:
            raise ValueError(f"models.streams = {self.streams} with models.mesh: sharded batches run "
                             "one at a time; leave streams out (or 1)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """How the report summarises per-item scores."""

    bootstrap: int = 1000  # bootstrap resamples for intervals (means and PGR)
    level: float = 0.95  # confidence level of every interval
    # true: an item some subject could not score (None) is dropped from every subject, as Somerstep
    # et al. (ICLR 2025) do, and the drops are counted; false: each subject over the items it scored
    common_items: bool = False

    def __post_init__(self):
        if not isinstance(self.common_items, bool):
            raise ValueError(f"report.common_items must be true or false, got {self.common_items!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 100:
            raise ValueError(f"report.bootstrap must be an int >= 100, got {self.bootstrap!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"report.level must be in (0, 1), got {self.level!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One experiment, fully typed. Build variants with ``dataclasses.replace``."""

    name: str  # the run's name
    task: Any  # the task object (w2s_jax.tasks.Task subclass instance)
    data: DataConfig
    models: ModelsConfig
    methods: tuple[Any, ...]  # method objects (w2s_jax.methods.Method), in run order
    generation: Generation
    train: Any  # w2s_jax.train.TrainConfig
    judge: Any = None  # w2s_jax.tasks.judge.JudgeOptions when the task needs a judge
    report: ReportConfig = ReportConfig()
    seed: int = 0  # every PRNG key of the run is folded from this
    chunk_size: int = 64  # rows per appended (resumable) chunk of a labelling stage
    source: str = ""  # the experiment file this came from

    def method(self, name: str):
        """The method object named ``name``."""
        for method in self.methods:
            if method.name == name:
                return method
        raise KeyError(name)


# --- loading -------------------------------------------------------------------------------------

_TOP_KEYS = ("kind", "name", "seed", "chunk_size", "description", "task", "data", "models", "methods",
             "generation", "train", "judge", "report")


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(valid)}"


def _check_keys(table: Mapping[str, Any], valid: Sequence[str], where: str, source: str) -> None:
    for key in table:
        if key not in valid:
            raise ExperimentError(f"{source}: unknown key {key!r} in {where}{_suggest(key, valid)}")


def build_dataclass(cls, table: Mapping[str, Any], where: str, source: str, **fixed):
    """``cls(**table)`` with unknown keys named (closest valid key suggested) and errors prefixed
    by the file and table; lists become tuples for tuple fields."""
    if not isinstance(table, Mapping):
        raise ExperimentError(f"{source}: {where} must be a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _check_keys(table, [n for n in fields if n not in fixed], where, source)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        return cls(**values, **fixed)
    except (TypeError, ValueError) as error:
        raise ExperimentError(f"{source}: {where}: {error}") from None


SEED_LIMIT = 2**32  # jax.random.key folds larger seeds onto smaller ones (2**32 is seed 0)

# [train] floats and their ranges (name, lowest, highest, lowest allowed, highest allowed): TrainConfig
# lets inf (and, for some, nan) through
_TRAIN_RANGES = (("learning_rate", 0.0, math.inf, False, False), ("weight_decay", 0.0, math.inf, True, False),
                 ("adam_b1", 0.0, 1.0, True, False), ("adam_b2", 0.0, 1.0, True, False),
                 ("grad_clip_norm", 0.0, math.inf, False, False), ("lora_alpha", 0.0, math.inf, False, False),
                 ("end_lr_ratio", 0.0, 1.0, True, True))


def check_train_numbers(train, source: str) -> None:
    """Every float of ``[train]`` finite and in its range, its ints not booleans, its seed below
    ``SEED_LIMIT``: ``learning_rate = inf`` is refused here as ``nan`` is, not found as a NaN loss."""
    for name, low, high, low_ok, high_ok in _TRAIN_RANGES:
        value = getattr(train, name)
        if value is None and name == "grad_clip_norm":
            continue
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (low < value or low_ok and value == low) and (value < high or high_ok and value == high))
        if not ok:
            where = (f"{'>=' if low_ok else '>'} {low:g}" if high == math.inf
                     else f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}")
            raise ExperimentError(f"{source}: [train] {name} must be a finite number {where}, got {value!r}")
    for field in dataclasses.fields(train):
        value = getattr(train, field.name)
        if isinstance(value, bool) and field.type in ("int", "int | None"):
            raise ExperimentError(f"{source}: [train] {field.name} must be an int, got {value!r}")
    if not train.seed < SEED_LIMIT:
        raise ExperimentError(f"{source}: [train] seed must be in [0, {SEED_LIMIT}), got {train.seed}")


def apply_overrides(raw: dict, overrides: Sequence[str], source: str) -> dict:
    """``key.sub=value`` overrides (value parsed as a TOML value, else taken as a string)."""
    for item in overrides:
        if "=" not in item:
            raise ExperimentError(f"--set {item!r}: expected KEY=VALUE, e.g. train.total_steps=10")
        path, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *parents, leaf = path.strip().split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ExperimentError(f"--set {item!r}: {part!r} is not a table")
        node[leaf] = value
    return raw


def read_experiment_file(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict, str]:
    """``(table, source)``: an experiment file's TOML with the ``--set`` ``overrides`` applied; a
    missing file or bad TOML is an ExperimentError naming the file (every kind reads its file so)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ExperimentError(f"{source}: experiment file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ExperimentError(f"{source}: not valid TOML: {error}") from None
    return apply_overrides(raw, overrides, source), source


def load_experiment(path: str | Path, *, overrides: Sequence[str] = (),
                    methods: Sequence[str] | None = None) -> ExperimentConfig:
    """Reads and checks an experiment file (files and data are checked by ``validate``).

    Arguments:
      path: the TOML file.
      overrides: ``--set`` items, ``dotted.key=value``.
      methods: replaces ``methods.run`` (the ``--methods`` flag).
    """
    raw, source = read_experiment_file(path, overrides)
    if methods is not None:
        raw.setdefault("methods", {})["run"] = list(methods)
    return experiment_from_dict(raw, source=source, default_name=Path(path).stem)


def experiment_from_dict(raw: Mapping[str, Any], *, source: str = "<experiment>",
                         default_name: str = "experiment") -> ExperimentConfig:
    """The typed experiment of a parsed TOML document (see the module docstring)."""
    from w2s_jax.methods import all_methods, get_method
    from w2s_jax.tasks import get_task
    from w2s_jax.train import TrainConfig

    _check_keys(raw, _TOP_KEYS, "the top level", source)
    # other kinds are registered experiment kinds (w2s_jax.pipeline.kind), each with its own loader
    if raw.get("kind", "standard") != "standard":
        raise ExperimentError(f"{source}: kind = {raw['kind']!r} is not a standard experiment; "
                              "run it with `w2s run`")
    for table in ("task", "data", "models"):
        if table not in raw:
            raise ExperimentError(f"{source}: missing [{table}] table")
    task_table = dict(raw["task"])
    if "name" not in task_table:
        raise ExperimentError(f"{source}: [task] needs a name (see `w2s list`)")
    try:
        task_cls = get_task(task_table.pop("name"))
    except KeyError as error:
        raise ExperimentError(f"{source}: [task] {error.args[0]}") from None
    task = task_cls(build_dataclass(task_cls.Options, task_table, "[task]", source))

    method_table = dict(raw.get("methods", {}))
    names = method_table.pop("run", None)
    if not names:
        raise ExperimentError(f"{source}: [methods] run = [...] must list at least one method")
    method_objs = []
    for name in names:
        try:
            cls = get_method(name)
        except KeyError as error:
            raise ExperimentError(f"{source}: [methods] run: {error.args[0]}") from None
        options = build_dataclass(cls.Options, method_table.get(name, {}), f"[methods.{name}]", source)
        method_objs.append(cls(options))
    known = set(all_methods())
    for name in method_table:  # tables of methods left out of this run (--methods) are kept unused
        if name not in known:
            raise ExperimentError(f"{source}: [methods.{name}] configures an unknown method"
                                  f"{_suggest(name, sorted(known))}")
    if len(set(names)) != len(names):
        raise ExperimentError(f"{source}: methods.run lists a method twice: {names}")
    for method in method_objs:
        for need in method.needs:
            if need not in names:
                raise ExperimentError(f"{source}: method {method.name!r} needs {need!r} in methods.run")

    by_name = {m.name: m for m in method_objs}
    for method in method_objs:
        try:
            method.check(by_name)
        except ValueError as error:
            raise ExperimentError(f"{source}: {error}") from None

    judge = None
    if task.needs_judge or "judge" in raw:
        from w2s_jax.tasks.judge import JudgeOptions

        judge = build_dataclass(JudgeOptions, raw.get("judge", {}), "[judge]", source)
        if task.judge_modes is not None and judge.mode not in task.judge_modes:
            raise ExperimentError(f"{source}: task {task.name!r} is scored with judge.mode in "
                                  f"{list(task.judge_modes)}, got judge.mode = {judge.mode!r}")
    train = build_dataclass(TrainConfig, raw.get("train", {}), "[train]", source)
    check_train_numbers(train, source)
    top = {k: raw[k] for k in ("seed", "chunk_size") if k in raw}
    for key, value in top.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "chunk_size" else 0):
            raise ExperimentError(f"{source}: {key} must be a non-negative int, got {value!r}")
    if not top.get("seed", 0) < SEED_LIMIT:
        raise ExperimentError(f"{source}: seed must be in [0, {SEED_LIMIT}), got {top['seed']}")
    return ExperimentConfig(
        name=str(raw.get("name", default_name)),
        task=task,
        data=build_dataclass(DataConfig, raw["data"], "[data]", source),
        models=build_dataclass(ModelsConfig, raw["models"], "[models]", source),
        methods=tuple(method_objs),
        generation=build_dataclass(Generation, raw.get("generation", {}), "[generation]", source),
        train=train,
        judge=judge,
        report=build_dataclass(ReportConfig, raw.get("report", {}), "[report]", source),
        source=source,
        **top,
    )


check_keys = _check_keys  # public name: other experiment kinds check their tables the same way
