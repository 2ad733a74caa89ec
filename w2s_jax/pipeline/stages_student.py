"""The student stages: fine-tune on a label set, predict the test split, score the predictions."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from w2s_jax.inference.engine import Engine
from w2s_jax.pipeline.models import load_model
from w2s_jax.pipeline.run import RunContext, Supervisor
from w2s_jax.pipeline.stage import ChunkedStage, Stage
from w2s_jax.pipeline.stages_labels import Labels, label_file_answers


class Finetune(Stage):
    """Fine-tunes a fresh copy of the strong model on one label set with ``w2s_jax.train``.

    Its artifact is the trainer's orbax checkpoint directory (``checkpoints/``): a killed run
    resumes there, and a later process restores the finished student from it. Labels with
    ``teacher_ids``/``teacher_probs`` are fitted with ``KLToTeacher``, text labels with
    ``CrossEntropyToTokens``. Rows whose label is empty are dropped and counted in the summary.
    """

    def __init__(self, labels: Labels):
        super().__init__("finetune/" + labels.name.split("/", 1)[1], [labels])
        self.labels = labels

    def settings(self, run: RunContext) -> dict:
        return {"train": run.config.train, "strong": run.fingerprint(run.config.models.strong),
                "chat": run.config.models.chat, **run.task_settings()}

    def _prepare(self, run: RunContext):
        from w2s_jax.train import CrossEntropyToTokens, KLToTeacher, SFTDataset

        run.pool.clear()  # the student and its optimizer need the memory the labellers held
        model, tokenizer = load_model(run.config.models.strong, dtype="float32", mesh=run.train_mesh,
                                      rules=run.rules)
        render = Engine(model, tokenizer, chat=run.config.models.chat, name="student").render
        by_index = {e.index: e for e in run.train}
        task, rows, dropped = run.config.task, [], 0
        for label in self.labels.records(run):
            if not label["completion"].strip():
                dropped += 1
                continue
            row = {"prompt": render(task.prompt(by_index[label["index"]])),
                   "completion": label["completion"]}
            for field in ("teacher_ids", "teacher_probs"):
                if field in label:
                    row[field] = label[field]
            rows.append(row)
        if not rows:
            raise ValueError(f"{self.name}: every training label is empty; nothing to fine-tune on")
        if dropped:
            warnings.warn(f"{self.name}: {dropped} empty label(s) dropped", stacklevel=2)
        cfg = run.config.train
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        data = SFTDataset(rows, tokenizer, max_len=cfg.max_len, pad_id=pad_id,
                          add_bos=not run.config.models.chat, seed=cfg.seed)
        loss = KLToTeacher() if "teacher_ids" in rows[0] else CrossEntropyToTokens()
        return model, tokenizer, data, loss, dropped

    def _train(self, run: RunContext, directory: Path):
        from w2s_jax.train import train

        model, tokenizer, data, loss, dropped = self._prepare(run)
        result = train(model, data, config=run.config.train, loss_fn=loss,
                       checkpoint_dir=directory / "checkpoints",
                       identity={"stage": self.name, "key": self.key(run)},
                       show_progress=run.show_progress, mesh=run.train_mesh, rules=run.rules)
        run.students = {self.name: (model, tokenizer)}  # one student in memory at a time
        return result, dropped, len(data)

    def execute(self, run: RunContext, directory: Path) -> str:
        result, dropped, rows = self._train(run, directory)
        losses = result.train_losses
        last = f", last loss {losses[max(losses)]:.4f}" if losses else ""
        return f"{result.step} steps on {rows} rows{last}" + (f", {dropped} empty labels dropped" if dropped else "")

    def student(self, run: RunContext):
        """``(model, tokenizer)`` of the finished student (restored from its checkpoint if needed)."""
        if self.name not in run.students:
            self._train(run, self.directory(run))  # a finished checkpoint: restores, 0 steps
        return run.students[self.name]


class Subject:
    """Who answers the test split: a weak supervisor, the untouched strong model, or a student."""

    name: str
    inputs: tuple[Stage, ...] = ()

    def settings(self, run: RunContext) -> dict: ...

    def answer(self, run: RunContext, examples, key) -> list[str]: ...


class WeakSubject(Subject):
    def __init__(self, supervisor: Supervisor):
        self.supervisor, self.name = supervisor, f"weak/{supervisor.name}"

    def settings(self, run):
        s = self.supervisor
        if s.model:
            return {"model": run.fingerprint(s.model), "prompt": "weak"}
        return {"label_file": hashlib.sha256(Path(s.label_file).read_bytes()).hexdigest()}

    def answer(self, run, examples, key):
        if self.supervisor.label_file:
            labels = label_file_answers(self.supervisor.label_file, "test", run.test)
            return [labels[e.index] for e in examples]
        task = run.config.task
        return task.answer(run.pool.engine(self.supervisor.model), [task.weak_prompt(e) for e in examples],
                           examples, run.config.generation, key=key)


class ZeroShotSubject(Subject):
    name = "zero-shot"

    def settings(self, run):
        return {"model": run.fingerprint(run.config.models.strong)}

    def answer(self, run, examples, key):
        task = run.config.task
        return task.answer(run.pool.engine(run.config.models.strong), [task.prompt(e) for e in examples],
                           examples, run.config.generation, key=key)


class StudentSubject(Subject):
    def __init__(self, finetune: Finetune):
        self.finetune, self.inputs = finetune, (finetune,)
        self.name = "student/" + finetune.name.split("/", 1)[1]

    def settings(self, run):
        return {}

    def answer(self, run, examples, key):
        model, tokenizer = self.finetune.student(run)
        m = run.config.models
        engine = Engine(model, tokenizer, chat=m.chat, batch_size=m.batch_size,
                        length_bucket=m.length_bucket, name=self.name, mesh=run.mesh, streams=m.streams)
        task = run.config.task
        return task.answer(engine, [task.prompt(e) for e in examples], examples,
                           run.config.generation, key=key)


class Predict(ChunkedStage):
    """A subject's answers to the test questions. Records: ``{"index", "prediction"}``."""

    def __init__(self, subject: Subject):
        super().__init__(f"predict/{subject.name}", subject.inputs)
        self.subject = subject

    def settings(self, run):
        return {"subject": self.subject.settings(run), **run.task_settings(),
                **run.inference_settings(), "data": run.data_hash}

    def units(self, run):
        return list(range(len(run.test)))

    def process(self, run, units, key):
        examples = [run.test[p] for p in units]
        answers = self.subject.answer(run, examples, key)
        return [[{"index": e.index, "prediction": a}] for e, a in zip(examples, answers)]

    def summarize(self, records):
        return f"{len(records)} test predictions"


class Score(ChunkedStage):
    """The task's metric of each test prediction (a judge model's when the task needs one).

    Records: ``{"index", <metric>: value, ...}``.
    """

    def __init__(self, predict: Predict):
        super().__init__("score/" + predict.name.split("/", 1)[1], [predict])
        self.predict = predict

    def settings(self, run):
        judged = run.config.task.needs_judge
        judge = ({"model": run.fingerprint(run.config.models.judge), "options": run.config.judge}
                 if judged else None)
        return {"judge": judge, **run.task_settings(), "seed": run.config.seed,
                "chunk_size": run.config.chunk_size}

    def units(self, run):
        return list(range(len(run.test)))

    def _judge(self, run):
        if not run.config.task.needs_judge:
            return None
        from w2s_jax.tasks.judge import Judge

        # the stage's key, not the chunk's: the judge folds in each item's own id, so a rating
        # depends on the item alone, whatever chunk it is scored in
        return Judge(run.pool.engine(run.config.models.judge), run.config.judge, key=run.key(self.name))

    def process(self, run, units, key):
        predictions = {r["index"]: r["prediction"] for r in self.predict.records(run)}
        examples = [run.test[p] for p in units]
        scores = run.config.task.metric(examples, [predictions[e.index] for e in examples],
                                        judge=self._judge(run))
        return [[{"index": e.index, **s}] for e, s in zip(examples, scores)]

    def summarize(self, records):
        if not records:
            return "0 scores"
        primary = next(k for k in records[0] if k not in ("index", "_unit") and not k.startswith("_"))
        values = [r[primary] for r in records if r[primary] is not None]
        mean = sum(values) / len(values) if values else float("nan")
        return f"{primary} {mean:.4f} over {len(values)} items"
