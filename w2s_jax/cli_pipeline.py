"""The pipeline's subcommands of ``w2s``: ``run``, ``report`` and ``list``.

``w2s run EXPERIMENT.toml [--out DIR] [--set key=value ...] [--methods a,b] [--no-progress]``
    Validates the whole experiment (files, rows, fields, split overlap) before any expensive
    work, then runs or resumes it in ``DIR`` (default ``runs/<name>``) and prints the results
    table. A finished stage is never recomputed; a changed setting recomputes the stages it
    affects in new directories.
    Stages live in a store shared by every run (``--store DIR``, default ``store/`` beside the run
    directory); ``--dry-run`` lists every stage's state and the models it would load, loading none.
    The file's ``kind`` chooses the experiment kind (``w2s_jax.registry.EXPERIMENT_KINDS``):
    ``concept-world`` runs the concept world (``w2s_jax.concept_world``), which builds its own
    models and data and plans the pipeline per seed in the same graph; ``classification`` runs
    binary weak-to-strong classification (``w2s_jax.classify``); ``--quick`` applies a kind's
    small preset.
    ``--processes N`` runs N processes of the run on this machine (``jax.distributed``, to try
    multi-host behaviour); ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the
    ``W2S_*`` variables of ``w2s_jax.processes``) make this process one of a multi-host run.
``w2s report RUN_DIR``
    Rebuilds ``results.json``, ``results.md`` and the figures of a run directory.
``w2s list``
    The shipped experiment files, the methods and the tasks.

Exit status as for every ``w2s`` command: 0 success, 2 a usage or input error (one line on
stderr naming the file, row, key or value), 1 an unexpected internal error.
"""

from __future__ import annotations

import os
from pathlib import Path

from w2s_jax.processes import PROCESS_ID_ENV, ProcessesError, join
from w2s_jax.startup import prepare_jax


class PipelineUsageError(Exception):
    """A bad experiment, file or run directory: ``w2s`` prints it as one line and exits 2."""


def shipped_experiments() -> list[Path]:
    """The experiment files shipped in the repository's ``experiments/`` folder and its ``paper/``
    subfolder (the paper's own settings)."""
    folder = Path(__file__).resolve().parent.parent / "experiments"
    return sorted(folder.glob("*.toml")) + sorted(folder.glob("paper/*.toml")) if folder.is_dir() else []


def add_run(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run (or resume) a weak-to-strong experiment")
    parser.add_argument("experiment", help="experiment file (TOML); see `w2s list`")
    parser.add_argument("--out", default=None, help="run directory (default runs/<name>)")
    parser.add_argument("--store", default=None,
                        help="the stage store shared by runs (default: $W2S_STORE, else store/ beside "
                             "the run directory)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list every stage's state and the models it would load; run nothing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set train.total_steps=10 (repeatable)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods to run instead of the file's methods.run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--quick", action="store_true",
                        help="the experiment kind's quick preset (kind = \"concept-world\")")
    group = parser.add_argument_group("several processes (docs/pipeline.md, Several hosts)")
    group.add_argument("--processes", type=int, default=None, metavar="N",
                       help="run N processes of this run on this machine (jax.distributed)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="process 0's address, reachable from every host (default $W2S_COORDINATOR)")
    group.add_argument("--num-processes", type=int, default=None, metavar="N",
                       help="processes in the run (default $W2S_NUM_PROCESSES, else 1)")
    group.add_argument("--process-id", type=int, default=None, metavar="I",
                       help="this process's number, 0..N-1 (default $W2S_PROCESS_ID)")
    group.add_argument("--coordinator-timeout", type=int, default=None, metavar="S",
                       help="seconds to wait for every process to join (default $W2S_COORDINATOR_TIMEOUT, "
                            "else 120)")
    parser.set_defaults(run=run_run)


def add_report(subparsers) -> None:
    parser = subparsers.add_parser("report", help="rebuild the report of a run directory")
    parser.add_argument("run_dir", help="a run directory written by `w2s run`")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.set_defaults(run=run_report)


def add_list(subparsers) -> None:
    parser = subparsers.add_parser("list", help="shipped experiments, methods and tasks")
    parser.set_defaults(run=run_list)


def run_run(args) -> int:
    from w2s_jax.pipeline import ExperimentError
    from w2s_jax.pipeline.kind import kind_of_file

    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        kind = kind_of_file(args.experiment)
        config = kind.load(args.experiment, overrides=args.set, methods=methods, quick=args.quick)
        if args.processes is not None and not args.dry_run and PROCESS_ID_ENV not in os.environ:
            return launch_processes(args)
        group = process_group(args)
        if not args.dry_run:
            kind.preflight(config, args.out)  # every checkable input, before anything is written
            prepare_jax()
            join(group)
        kind.run(config, run_dir=args.out, store=args.store, show_progress=not args.no_progress,
                 figures=not args.no_figures, dry_run=args.dry_run, methods=methods)
    except (ExperimentError, FileNotFoundError, ProcessesError) as error:
        raise PipelineUsageError(str(error)) from None
    return 0


def process_group(args):
    """This process's place in its run, from the flags and the environment."""
    from w2s_jax.processes import ProcessGroup

    if args.processes is not None and any(v is not None for v in (args.coordinator, args.num_processes,
                                                                     args.process_id)):
        raise PipelineUsageError("--processes launches local processes; it cannot be combined with "
                                 "--coordinator, --num-processes or --process-id")
    return ProcessGroup.from_settings(coordinator=args.coordinator, num_processes=args.num_processes,
                                      process_id=args.process_id, timeout=args.coordinator_timeout)


def launch_processes(args) -> int:
    """``--processes N``: the same command as N local processes of one run; their exit status.
    The processes get the same arguments; the variables :func:`~w2s_jax.processes.launch_local`
    sets tell each it is one of them."""
    import sys

    from w2s_jax.processes import launch_local

    process_group(args)  # refuses --processes with the multi-host flags
    if args.argv == sys.argv[1:]:  # the program as started (`w2s`, `python -m ...`, a script)
        program = sys.orig_argv[:len(sys.orig_argv) - len(sys.argv) + 1]
    else:  # called as a function with other arguments
        program = [sys.executable, "-c", "import sys; from w2s_jax.cli import main; sys.exit(main(sys.argv[1:]))"]
    return launch_local([*program, *args.argv], args.processes)


def run_report(args) -> int:
    from w2s_jax.pipeline.kind import kind_of_run_dir

    kind = kind_of_run_dir(Path(args.run_dir))
    if kind is None:
        raise PipelineUsageError(f"{args.run_dir}: not a run directory of `w2s run` (no plan.json)")
    try:
        print(kind.report(args.run_dir, figures=not args.no_figures))
    except (FileNotFoundError, ValueError) as error:
        raise PipelineUsageError(str(error)) from None
    return 0


def run_list(args) -> int:
    from w2s_jax.methods import all_methods
    from w2s_jax.tasks import all_tasks

    def first_line(cls) -> str:
        return ((cls.__doc__ or "").strip().splitlines() or [""])[0]

    print("experiments:")
    for path in shipped_experiments():
        print(f"  {path}")
    print("methods:")
    for name, cls in all_methods().items():
        print(f"  {name:20s} {first_line(cls)}")
    print("tasks:")
    for name, cls in all_tasks().items():
        print(f"  {name:20s} {first_line(cls)}")
    return 0
