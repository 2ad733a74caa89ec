"""Everything about a run that can be checked before its first stage, checked at once.

``w2s run`` calls :func:`preflight` after reading the experiment and before any stage runs or
anything is written. Each problem is an :class:`ExperimentError` of one line (``w2s`` prints it
and exits 2), found in seconds instead of after the weak stages have run:

- the run's name is a plain name (it names ``runs/<name>``), and the run directory is usable: a
  directory or a path that can become one, writable;
- no weak model (or weak label file) is listed twice;
- every model the run loads (strong, weak, intermediate, the judge when the task needs one):
  config, tokenizer, safetensors headers and sizes, vocabulary bounds
  (``w2s_jax.pipeline.checkpoint_checks``); with ``models.chat``, a chat template;
- both splits: every row valid for the task, and no test question equal to a training question
  up to ``w2s_jax.tasks.data.overlap_key`` (NFKC, case, whitespace);
- every prompt fits the context (``max_position_embeddings``) of each model that reads it: the
  weak models read the weak prompts of both splits, the strong model (and the students) the task
  prompts of both splits, the intermediate models those of the training split. A prompt longer
  than a context is refused, never truncated;
- every training row fits ``train.max_len`` as fine-tuning tokenizes it (``SFTDataset``): the
  strong model's prompt plus the label, which is the gold answer for ``gold`` and, for labels a
  model generates, at most ``generation.max_new_tokens`` tokens and the end-of-sequence token.
  With ``data.truncate = "none"`` (the default) a row that does not fit is refused;
  ``"prompt-left"`` lets fine-tuning keep the end of its prompt, and the rows it cuts are counted
  in a warning (a label that alone leaves no room for a prompt token is still refused).

Warnings (printed only when every check passed, so an error is never buried): more rows requested
(``data.n_train``, ``data.n_test``) than a split holds, prompts that leave fewer than
``generation.max_new_tokens`` positions of a context, rows cut by ``"prompt-left"``.
Library log lines emitted while checking are held back the same way (``w2s_jax.held_logs``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from w2s_jax.held_logs import held_library_logs
from w2s_jax.pipeline.checkpoint_checks import CheckedModel, check_checkpoint, one_line
from w2s_jax.pipeline.config import ExperimentConfig, ExperimentError
from w2s_jax.tasks.base import DataError, Example, Task


def _warn(message: str) -> None:
    print(f"w2s run: warning: {message}", file=sys.stderr)


def preflight(config: ExperimentConfig, run_dir: str | Path | None = None, *,
              warn: Callable[[str], None] = _warn) -> None:
    """Checks the whole run before any work (see the module docstring).

    Arguments:
      config: the loaded experiment.
      run_dir: the run directory (``--out``); None for the default ``runs/<name>``.
      warn: called with each warning, after every check has passed.
    Raises:
      ExperimentError: the first problem found, one line naming the file, key, row or model.
    """
    notes: list[str] = []
    with held_library_logs():
        check_name(config)
        check_run_dir(run_dir, config)
        check_duplicates(config)
        models = check_models(config)
        train = load_checked_split(config, "train", notes)
        test = load_checked_split(config, "test", notes)
        check_overlap(config, train, test)
        check_contexts(config, models, train, test, notes)
        check_training_rows(config, models["models.strong"], train, notes)
    for note in notes:
        warn(note)


def check_name(config: ExperimentConfig) -> None:
    """The run's name names a directory inside ``runs/``: no separator, no leading dot, printable."""
    name = config.name
    if (not name or "/" in name or "\\" in name or name.startswith(".") or not name.isprintable()
            or len(name.encode()) > 255):
        raise ExperimentError(f"{config.source}: name = {name!r} is not a plain name (it names the run "
                              "directory runs/<name>: no '/' or '\\', no leading '.', printable, "
                              "at most 255 bytes)")


def check_run_dir(run_dir: str | Path | None, config: ExperimentConfig) -> None:
    """The run directory exists as a writable directory, or can be created (its nearest existing
    ancestor is a writable directory). Nothing is created here."""
    given = run_dir is not None
    path = Path(run_dir) if given else Path("runs") / config.name
    what = f"--out {str(run_dir)!r}" if given else f"{config.source}: the run directory {str(path)!r}"
    if path.exists():
        if not path.is_dir():
            raise ExperimentError(f"{what}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ExperimentError(f"{what}: the directory is not writable")
        return
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExperimentError(f"{what}: {str(ancestor)!r} is a file, so no directory can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExperimentError(f"{what}: cannot be created, {str(ancestor)!r} is not writable")


def _identity(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def check_duplicates(config: ExperimentConfig) -> None:
    """No weak model or weak label file listed twice (the same path, however written)."""
    for key in ("weak", "weak_label_files"):
        seen: dict[str, int] = {}
        for i, name in enumerate(getattr(config.models, key)):
            j = seen.setdefault(_identity(name), i)
            if j != i:
                raise ExperimentError(f"{config.source}: models.{key} lists {name!r} twice ({key}[{j}] and "
                                      f"{key}[{i}]); each weak supervisor runs once")


def check_models(config: ExperimentConfig) -> dict[str, CheckedModel]:
    """Every model the run loads, checked (``checkpoint_checks``); by key, e.g. ``"models.weak[0]"``."""
    m = config.models
    named = [("models.strong", m.strong)]
    named += [(f"models.weak[{i}]", name) for i, name in enumerate(m.weak)]
    named += [(f"models.intermediate[{i}]", name) for i, name in enumerate(m.intermediate)]
    if config.task.needs_judge and m.judge:  # a missing judge is reported by the plan's checks
        named.append(("models.judge", m.judge))
    checked: dict[str, CheckedModel] = {}
    by_name: dict[str, CheckedModel] = {}
    for what, name in named:
        if name not in by_name:
            try:
                by_name[name] = check_checkpoint(name, what)
            except ValueError as error:
                raise ExperimentError(f"{config.source}: {error}") from None
        model = by_name[name]
        if m.chat and getattr(model.tokenizer, "chat_template", None) is None:
            raise ExperimentError(f"{config.source}: models.chat = true but the tokenizer of {what} "
                                  f"{name!r} has no chat template")
        checked[what] = model
    return checked


def load_checked_split(config: ExperimentConfig, which: str, notes: list[str]) -> list[Example]:
    """The split's examples, every row checked by the task; a note when ``data.n_<which>`` asks for
    more rows than the split holds."""
    from w2s_jax.tasks.data import load_rows_counted

    data = config.data
    source = data.train if which == "train" else data.test
    split = data.train_split if which == "train" else data.test_split
    wanted = data.n_train if which == "train" else data.n_test
    try:
        rows, total = load_rows_counted(source, split=split, hub_config=data.hub_config, limit=wanted or None)
    except (OSError, ValueError) as error:
        raise ExperimentError(f"{config.source}: data.{which}: {one_line(error)}") from None
    if not rows:
        raise ExperimentError(f"{config.source}: data.{which} {source!r} has no rows")
    if wanted > total:
        notes.append(f"data.n_{which} = {wanted} but {source} has {total} rows: using all {total}")
    try:
        return [config.task.example(row, index, source) for index, row in enumerate(rows)]
    except DataError as error:
        raise ExperimentError(one_line(error)) from None


def check_overlap(config: ExperimentConfig, train: list[Example], test: list[Example]) -> None:
    """No test question equal to a training question after NFKC, case folding and whitespace
    collapsing (``w2s_jax.tasks.data.overlap_key``)."""
    from w2s_jax.tasks.data import split_overlap

    overlap = split_overlap(train, test)
    if overlap:
        t, r = overlap[0]
        raise ExperimentError(f"{config.source}: the test split overlaps training: test row {t} of "
                              f"{config.data.test} is training row {r} of {config.data.train} when "
                              "compared after Unicode NFKC, case folding and collapsing whitespace "
                              f"({len(overlap)} overlapping row(s) in all)")


def render(model: CheckedModel, prompt, *, chat: bool) -> str:
    """The text the model reads for ``prompt``, as ``Engine.render`` makes it."""
    from w2s_jax.inference.engine import as_prompt

    prompt = as_prompt(prompt)
    if not chat:
        return prompt.as_text()
    return model.tokenizer.apply_chat_template(prompt.as_messages(), add_generation_prompt=True,
                                               tokenize=False)


def prompt_lengths(model: CheckedModel, prompts: Sequence, *, chat: bool) -> list[int]:
    """Tokens of each prompt as the inference engine encodes it (``Engine.encode``)."""
    if not prompts:
        return []
    texts = [render(model, p, chat=chat) for p in prompts]
    return [len(ids) for ids in model.tokenizer(texts, add_special_tokens=not chat)["input_ids"]]


def _generates(task: Task) -> bool:
    return type(task).answer is Task.answer


def check_contexts(config: ExperimentConfig, models: dict[str, CheckedModel], train: list[Example],
                   test: list[Example], notes: list[str]) -> None:
    """Every prompt within the context of each model that reads it (see the module docstring);
    a note when generation can run past a context."""
    task, chat, budget = config.task, config.models.chat, config.generation.max_new_tokens
    for what, model in models.items():
        if what == "models.judge":  # its prompts hold the answers: not known before the run
            continue
        weak = what.startswith("models.weak")
        splits = [("train", train)] + ([] if what.startswith("models.intermediate") else [("test", test)])
        tight = total = 0
        for split, examples in splits:
            prompts = [task.weak_prompt(e) if weak else task.prompt(e) for e in examples]
            for example, length in zip(examples, prompt_lengths(model, prompts, chat=chat)):
                if length > model.context:
                    raise ExperimentError(
                        f"{config.source}: {split} row {example.index}: the {'weak ' if weak else ''}prompt "
                        f"is {length} tokens, more than the context of {what} {model.name!r} "
                        f"({model.context} tokens, max_position_embeddings in config.json); prompts "
                        "are never truncated: shorten or remove the row")
                tight += length + budget > model.context
                total += 1
        if tight and _generates(task):
            notes.append(f"{tight} of {total} prompts of {what} leave fewer than generation.max_new_tokens "
                         f"= {budget} positions of its {model.context}-token context: longer answers run "
                         "past the positions it was trained on")


def check_training_rows(config: ExperimentConfig, strong: CheckedModel, train: list[Example],
                        notes: list[str]) -> None:
    """Every training row fits ``train.max_len`` under ``data.truncate`` (see the module docstring)."""
    task, chat, max_len = config.task, config.models.chat, config.train.max_len
    tokenizer = strong.tokenizer
    trained = [m for m in config.methods if m.trains]
    gold = any(m.needs_gold for m in trained)
    generated = _generates(task) and any(
        m.roles or (m.uses_weak and config.models.weak) for m in trained if not m.needs_gold)
    if not gold and not generated:
        return
    bos = int(not chat and tokenizer.bos_token_id is not None)
    eos = int(tokenizer.eos_token_id is not None)
    texts = [render(strong, task.prompt(e), chat=chat) for e in train]
    prompts = [bos + len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = []  # (example, prompt tokens, label tokens, what the label is)
    if gold:
        answered = [e for e in train if e.answer is not None]  # unanswered: the plan's checks refuse
        targets = [task.target(e, e.answer) for e in answered]
        lengths = [len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]] if targets else []
        rows += [(e, prompts[e.index], n + eos, "its gold answer") for e, n in zip(answered, lengths)]
    if generated:
        bound = config.generation.max_new_tokens + eos
        rows += [(e, prompts[e.index], bound, "a generated label of up to generation.max_new_tokens = "
                  f"{config.generation.max_new_tokens}") for e in train]
    cut_rows = {e.index for e, p, c, _ in rows if p + c > max_len}
    if config.data.truncate == "none":
        long = [row for row in rows if row[1] + row[2] > max_len]
        if long:
            e, p, c, label = long[0]
            raise ExperimentError(
                f"{config.source}: training row {e.index} of {config.data.train} does not fit train.max_len "
                f"= {max_len}: its prompt is {p} tokens and {label} adds {c} (end-of-sequence "
                f"included), {p + c} in all ({len(cut_rows)} row(s) too long); raise train.max_len, "
                "shorten the rows, or set data.truncate = \"prompt-left\"")
        return
    no_room = [row for row in rows if row[2] + 1 > max_len]
    if no_room:
        e, p, c, label = no_room[0]
        raise ExperimentError(
            f"{config.source}: training row {e.index} of {config.data.train}: {label} is {c} tokens "
            f"(end-of-sequence included), leaving no room for a prompt token in train.max_len = {max_len}")
    if cut_rows:
        notes.append(f"data.truncate = \"prompt-left\": {len(cut_rows)} of {len(train)} training rows "
                     f"{'may lose' if generated else 'lose'} prompt tokens from the left to fit "
                     f"train.max_len = {max_len}")
