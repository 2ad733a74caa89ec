"""`w2s run` as several processes (``jax.distributed``, gloo on the CPU), against one process.

The tiny experiment (``tests/pipeline/tiny_run.py``) runs through the command line as one process
and as ``--processes 2`` (two processes of one CPU device each, one run): every records file and
``results.json`` must be identical, and every fine-tuned student's parameters (trained on a mesh
over both processes, checkpointed by both) equal within float32 tolerance (the gradient is summed
over two devices in another order). Then a run whose processes are killed mid-stage (once in a
labelling stage, once in fine-tuning after a checkpoint) is restarted to the same results; a
process that cannot reach its coordinator fails in one line within its timeout; and the launcher
stops every process when one fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.tiny_run import make_world
from w2s_jax.processes import ProcessesError, ProcessGroup, free_port, launch_local

pytest.importorskip("torch", reason="building the tiny checkpoints needs torch")

ROOT = Path(__file__).resolve().parents[2]
ENTRY = [sys.executable, "-m", "tests.distributed.w2s_with_test_task"]
SETTINGS = ["--set", "train.checkpoint_every=1", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    _, experiment = make_world(root / "world")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "",  # one device each
           "W2S_COMPILATION_CACHE": str(root / "compiled"), "OPENBLAS_NUM_THREADS": "1"}
    for name in ("W2S_STORE", "W2S_COORDINATOR", "W2S_NUM_PROCESSES", "W2S_PROCESS_ID"):
        env.pop(name, None)
    return root, experiment, env


def w2s_run(experiment, out, env, *extra, check=True):
    """``w2s run`` in a subprocess (its store beside ``out``); the finished process."""
    done = subprocess.run([*ENTRY, "run", str(experiment), "--out", str(out), *SETTINGS, *extra], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def stages(run_dir) -> dict[str, Path]:
    return {s["name"]: Path(s["directory"]) for s in json.loads((run_dir / "stages.json").read_text())["stages"]}


def student_arrays(stage_dir: Path) -> dict:
    """The model arrays of a fine-tuning stage's last checkpoint, as numpy (read with orbax)."""
    import jax
    import orbax.checkpoint as ocp

    last = max(int(p.name) for p in (stage_dir / "checkpoints").iterdir() if p.name.isdigit())
    path = stage_dir / "checkpoints" / str(last) / "arrays"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path)
    tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
    arrays = checkpointer.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(arrays["model"])}


def assert_same_run(reference: Path, run: Path) -> None:
    """Records identical stage by stage, results identical, students equal within tolerance."""
    ref, got = stages(reference), stages(run)
    assert ref.keys() == got.keys()
    checked_records = checked_students = 0
    for name, directory in ref.items():
        if (directory / "records.jsonl").is_file():
            assert (got[name] / "records.jsonl").read_text() == (directory / "records.jsonl").read_text(), name
            checked_records += 1
        elif name.startswith("finetune/"):
            a, b = student_arrays(directory), student_arrays(got[name])
            assert a.keys() == b.keys() and len(a) > 5
            for path in a:
                np.testing.assert_allclose(b[path], a[path], rtol=1e-5, atol=1e-5, err_msg=f"{name} {path}")
            checked_students += 1
    assert checked_records >= 12 and checked_students == 3

    def rows(run_dir):  # the training-curve links name each run's own store
        results = json.loads((run_dir / "results.json").read_text())
        return json.dumps([{k: v for k, v in r.items() if k != "training"} for r in results["rows"]], sort_keys=True)

    assert rows(run) == rows(reference)


@pytest.fixture(scope="module")
def reference(world):
    root, experiment, env = world
    w2s_run(experiment, root / "one" / "run", env)
    return root / "one" / "run"


def test_two_processes_give_the_one_process_results(world, reference):
    root, experiment, env = world
    out = root / "two" / "run"
    done = w2s_run(experiment, out, env, "--processes", "2")
    assert_same_run(reference, out)
    # the work was split: both processes wrote a part of every chunked stage
    weak = next(d for name, d in stages(out).items() if name.startswith("weak-labels/"))
    parts = sorted(p.name for p in weak.glob("part-*.jsonl"))
    assert parts == ["part-00000.jsonl", "part-00001.jsonl"]
    assert all(len(p.read_text().splitlines()) == 5 for p in weak.glob("part-*.jsonl"))  # 10 rows, 5 each
    assert "process 1 of 2: joining through coordinator 127.0.0.1:" in done.stderr
    assert done.stdout.count("| student/gold |") == 1  # the report, printed (and written) once


def pids_of_run(launcher: subprocess.Popen) -> dict[int, int]:
    """{process id: pid} of a launcher's child processes (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != launcher.pid:
                continue
            environ = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode().split("\0")
                           if "=" in item)
            found[int(environ["W2S_PROCESS_ID"])] = int(entry.name)
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return found


def kill_when(launcher: subprocess.Popen, process_id: int, ready, timeout: float = 400) -> None:
    """SIGKILLs process ``process_id`` of the run as soon as ``ready()``, then waits for the
    launcher to stop the other one and exit."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert launcher.poll() is None, f"the run ended before the kill point: {launcher.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    os.kill(pids_of_run(launcher)[process_id], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signal.SIGKILL, stderr[-2000:]
    assert f"process {process_id} of 2 was killed by SIGKILL; stopped the other processes" in stderr


def test_killed_processes_resume_to_the_same_results(world, reference):
    root, experiment, env = world
    out = root / "killed" / "run"
    store = out.parent / "store"
    command = [*ENTRY, "run", str(experiment), "--out", str(out), *SETTINGS, "--processes", "2"]

    def stage_dir(slug):
        found = list(store.glob(f"{slug}-*"))
        return found[0] if found else None

    def weak_labels_half_done():  # one unit per chunk: kill between two appends of process 1
        d = stage_dir("weak-labels")
        part = d / "part-00001.jsonl" if d else None
        return part is not None and part.is_file() and len(part.read_text().splitlines()) >= 1

    paused = {**env, "W2S_TEST_PAUSE_S": "0.5"}  # the kill lands between two appends on any machine
    launcher = subprocess.Popen([*command, "--set", "chunk_size=1"], env=paused, cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_when(launcher, 1, weak_labels_half_done)
    weak = stage_dir("weak-labels")
    assert not (weak / "records.jsonl").exists()
    assert len((weak / "part-00001.jsonl").read_text().splitlines()) < 5  # killed mid-share

    def naive_checkpointed_not_done():
        d = stage_dir("finetune.naive")
        return d is not None and (d / "checkpoints" / "1").is_dir() and not (d / "checkpoints" / "3").is_dir()

    launcher = subprocess.Popen(command, env=paused, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    kill_when(launcher, 0, naive_checkpointed_not_done)
    finetune = stage_dir("finetune.naive")
    assert json.loads((finetune / "manifest.json").read_text())["status"] == "running"

    done = w2s_run(experiment, out, env, "--processes", "2")
    assert "resuming" in done.stderr and "finetune.naive" in done.stderr  # from its checkpoint
    assert_same_run(reference, out)
    steps = [json.loads(line)["step"] for line in (finetune / "metrics.jsonl").read_text().splitlines()]
    # each step at most once (the line of a step whose checkpoint was written just before the
    # kill may be missing: the trainer calls back after checkpointing)
    assert steps[-1] == 3 and len(steps) == len(set(steps)) == len(set(steps) & {1, 2, 3})


def test_unreachable_coordinator_fails_in_one_line_within_the_timeout(world):
    root, experiment, env = world
    start = time.monotonic()
    done = w2s_run(experiment, root / "lost" / "run", env, "--coordinator", f"127.0.0.1:{free_port()}",
                   "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "3", check=False)
    assert done.returncode == 2
    assert time.monotonic() - start < 60
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("w2s run: error: cannot reach the coordinator 127.0.0.1:") and "within 3 s" in error


def test_launcher_stops_every_process_when_one_fails():
    script = ("import os, sys, time\n"
              "if os.environ['W2S_PROCESS_ID'] == '1': sys.exit(3)\n"
              "time.sleep(120)\n")
    lines = []
    start = time.monotonic()
    assert launch_local([sys.executable, "-c", script], 3, log=lines.append) == 3
    assert time.monotonic() - start < 30  # processes 0 and 2 were stopped, not waited for
    assert lines == ["process 1 of 3 exited with status 3; stopped the other processes"]
    assert launch_local([sys.executable, "-c", "pass"], 2, log=lines.append) == 0


def test_process_settings_from_flags_and_environment():
    env = {"W2S_COORDINATOR": "10.0.0.1:8476", "W2S_NUM_PROCESSES": "4", "W2S_PROCESS_ID": "3"}
    group = ProcessGroup.from_settings(environ=env)
    assert (group.coordinator, group.num_processes, group.process_id, group.distributed) == ("10.0.0.1:8476", 4, 3, True)
    assert ProcessGroup.from_settings(process_id=0, environ=env).process_id == 0  # a flag wins
    assert not ProcessGroup.from_settings(environ={}).distributed
    for bad, message in [({**env, "W2S_PROCESS_ID": "4"}, "not in 0..3"),
                         ({**env, "W2S_NUM_PROCESSES": "two"}, "must be an integer"),
                         ({**env, "W2S_COORDINATOR": "10.0.0.1"}, "is not HOST:PORT"),
                         ({"W2S_COORDINATOR": "10.0.0.1:1"}, "no number of processes")]:
        with pytest.raises(ProcessesError, match=message):
            ProcessGroup.from_settings(environ=bad)


def test_a_store_the_processes_do_not_share_is_refused(world):
    """Two processes of one run each given their own store (as two hosts without a shared
    filesystem would have): both stop with one line before any stage runs."""
    root, experiment, env = world
    port = free_port()
    children = [subprocess.Popen([*ENTRY, "run", str(experiment), "--out", str(root / "apart" / "run"),
                                  *SETTINGS, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                  "--process-id", str(i), "--coordinator-timeout", "60"],
                                 env={**env, "W2S_STORE": str(root / "apart" / f"store-{i}")}, cwd=ROOT,
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for child in children:
        _, stderr = child.communicate(timeout=300)
        assert child.returncode == 2, stderr[-2000:]
        assert stderr.strip().splitlines()[-1].startswith("w2s run: error: the store ")
        assert "is not shared: process(es) [1] cannot see a file process 0 wrote there" in stderr
    assert not list((root / "apart").glob("store-*/weak-labels-*"))  # no stage ran


def test_a_stage_interrupted_under_one_process_count_resumes_under_another(tmp_path):
    """Units written by a one-process run are neither recomputed nor merged twice when two
    processes resume the stage (each process here runs in turn; barriers are no-ops)."""
    import dataclasses

    from w2s_jax.pipeline.artifacts import atomic_write_json
    from w2s_jax.pipeline.stage import ChunkedStage, Resources
    from w2s_jax.pipeline.store import Store

    computed = []

    @dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
    class Squares(ChunkedStage):
        n: int
        stop_after: int | None = dataclasses.field(default=None, metadata={"label": True})

        def units(self, res):
            return list(range(self.n))

        def process(self, res, units):
            if self.stop_after is not None and len(computed) >= self.stop_after:
                raise KeyboardInterrupt  # the kill
            computed.extend(units)
            return [[{"index": u, "square": u * u}] for u in units]

    store = Store(tmp_path / "store")

    def resources(index, count):
        res = Resources(store, None, chunk_size=1, show_progress=False)
        res.process_index, res.process_count = index, count
        return res

    directory = store.directory(Squares(name="squares", n=10))
    atomic_write_json(directory / "manifest.json", {"status": "running"})  # as the runner leaves it
    with pytest.raises(KeyboardInterrupt):
        Squares(name="squares", n=10, stop_after=7).execute(resources(0, 1), directory)  # units 0..6 done
    assert computed == list(range(7))
    Squares(name="squares", n=10).execute(resources(1, 2), directory)  # share 5..9: only 7..9 left
    Squares(name="squares", n=10).execute(resources(0, 2), directory)  # share 0..4: all done; merges
    assert computed == list(range(10))
    records = [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines()]
    assert [(r["index"], r["square"]) for r in records] == [(u, u * u) for u in range(10)]
