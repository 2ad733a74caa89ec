"""The processes of one run: joining them with ``jax.distributed``, and launching N on one machine.

Every process of a multi-process run executes the same command; they find each other through a
coordinator (process 0's address and a free port). Each process is told three things, by flag or
by environment variable (a flag wins):

    --coordinator HOST:PORT   W2S_COORDINATOR      process 0's address, reachable from every host
    --num-processes N         W2S_NUM_PROCESSES    how many processes the run has
    --process-id I            W2S_PROCESS_ID       this process's number, 0 .. N-1

and optionally ``--coordinator-timeout S`` / ``W2S_COORDINATOR_TIMEOUT`` (seconds a process waits
for all the others to join before failing, default 120). Nothing set: one process, no
``jax.distributed``. On a TPU pod slice, or under SLURM or Open MPI, ``W2S_NUM_PROCESSES`` alone
(with no coordinator) lets JAX read the rest from the cluster (``jax.distributed.initialize()``
with no arguments).

:func:`launch_local` runs N processes of one command on this machine (``w2s run EXP --processes
N``): a free local port as coordinator, the same arguments, the three variables set per process;
it waits for all, and when one fails it stops the others and returns that process's status.
On a CPU the processes exchange arrays through gloo (``jax_cpu_collectives_implementation``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = "W2S_COORDINATOR", "W2S_NUM_PROCESSES", "W2S_PROCESS_ID"
TIMEOUT_ENV = "W2S_COORDINATOR_TIMEOUT"
DEFAULT_TIMEOUT = 120


class ProcessesError(ValueError):
    """A bad process setting, or processes that could not join: one line naming the problem."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessGroup:
    """Who this process is in its run. ``coordinator=None`` with ``num_processes > 1``: the
    cluster tells JAX (TPU metadata, SLURM, Open MPI)."""

    num_processes: int = 1
    process_id: int | None = None
    coordinator: str | None = None
    timeout: int = DEFAULT_TIMEOUT  # seconds to wait for every process to join

    def __post_init__(self):
        if self.num_processes < 1:
            raise ProcessesError(f"the number of processes must be >= 1, got {self.num_processes}")
        if self.process_id is not None and not 0 <= self.process_id < self.num_processes:
            raise ProcessesError(f"process id {self.process_id} is not in 0..{self.num_processes - 1}")
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit():
                raise ProcessesError(f"coordinator {self.coordinator!r} is not HOST:PORT")
            if self.process_id is None:
                raise ProcessesError(f"a coordinator is set but no process id ({PROCESS_ID_ENV} or --process-id)")
        if self.timeout < 1:
            raise ProcessesError(f"the coordinator timeout must be >= 1 second, got {self.timeout}")

    @classmethod
    def tiny(cls) -> "ProcessGroup":
        """One process."""
        return cls()

    @property
    def distributed(self) -> bool:
        """Whether ``jax.distributed`` must be initialised."""
        return self.num_processes > 1 or self.coordinator is not None

    @classmethod
    def from_settings(cls, *, coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, timeout: int | None = None,
                      environ: Mapping[str, str] = os.environ) -> "ProcessGroup":
        """The group from flags (given values) and else the environment variables."""
        def integer(value, name):
            if value is None or isinstance(value, int):
                return value
            try:
                return int(value)
            except ValueError:
                raise ProcessesError(f"{name} must be an integer, got {value!r}") from None

        num = integer(num_processes if num_processes is not None else environ.get(NUM_PROCESSES_ENV),
                      NUM_PROCESSES_ENV)
        pid = integer(process_id if process_id is not None else environ.get(PROCESS_ID_ENV), PROCESS_ID_ENV)
        wait = integer(timeout if timeout is not None else environ.get(TIMEOUT_ENV), TIMEOUT_ENV)
        coord = coordinator if coordinator is not None else (environ.get(COORDINATOR_ENV) or None)
        if coord is not None and num is None:
            raise ProcessesError(f"a coordinator is set but no number of processes "
                                 f"({NUM_PROCESSES_ENV} or --num-processes)")
        return cls(num_processes=1 if num is None else num, process_id=pid, coordinator=coord,
                   timeout=DEFAULT_TIMEOUT if wait is None else wait)


def join(group: ProcessGroup, *, log: Callable[[str], None] | None = None) -> None:
    """Initialises ``jax.distributed`` for ``group`` (a no-op for one process). Call before any
    JAX computation.

    A process other than 0 first waits for the coordinator's port to accept connections, up to
    ``group.timeout`` seconds, and raises :class:`ProcessesError` naming the address when it does
    not. Past that, JAX itself bounds the wait for the other processes by the same timeout, and
    ends the process (status 134, ``DEADLINE_EXCEEDED``) when one never joins; the line logged
    before says which run it was joining."""
    if not group.distributed:
        return
    import jax

    from w2s_jax.startup import runs_on_cpu

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if group.coordinator is not None and group.process_id != 0:
        wait_for_coordinator(group.coordinator, group.timeout)
    if runs_on_cpu():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    log(f"process {group.process_id} of {group.num_processes}: joining through coordinator "
        f"{group.coordinator or '(from the cluster)'} (waiting up to {group.timeout} s for every process)")
    jax.distributed.initialize(coordinator_address=group.coordinator, num_processes=group.num_processes,
                               process_id=group.process_id, initialization_timeout=group.timeout)


def wait_for_coordinator(address: str, timeout: float, poll: float = 0.5) -> None:
    """Returns once ``address`` (HOST:PORT) accepts a TCP connection; raises
    :class:`ProcessesError` after ``timeout`` seconds without one."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(poll, 0.1)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ProcessesError(f"cannot reach the coordinator {address} within {timeout:g} s "
                                     f"({error.strerror or error}); is process 0 running, and is "
                                     f"{address} its address as seen from this host?") from None
            time.sleep(poll)


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_environments(num_processes: int, port: int, base: Mapping[str, str] = os.environ) -> list[dict]:
    """The environment of each of ``num_processes`` local processes with coordinator ``port``."""
    return [{**base, COORDINATOR_ENV: f"127.0.0.1:{port}", NUM_PROCESSES_ENV: str(num_processes),
             PROCESS_ID_ENV: str(i)} for i in range(num_processes)]


def launch_local(command: Sequence[str], num_processes: int, *, env: Mapping[str, str] | None = None,
                 poll: float = 0.2, log: Callable[[str], None] | None = None) -> int:
    """Runs ``command`` as ``num_processes`` processes of one run on this machine; returns 0 when
    all succeed, else the status of the first to fail (after stopping the others: SIGTERM, then
    SIGKILL after 10 s). One line on stderr names the failed process."""
    if num_processes < 1:
        raise ProcessesError(f"--processes must be >= 1, got {num_processes}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    children = [subprocess.Popen(list(command), env=e)
                for e in local_environments(num_processes, free_port(), os.environ if env is None else env)]
    try:
        while True:
            codes = [c.poll() for c in children]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                first = failed[0]
                stop(children)
                code = codes[first]
                how = f"exited with status {code}" if code > 0 else f"was killed by {signal_name(-code)}"
                log(f"process {first} of {num_processes} {how}; stopped the other processes")
                return code if code > 0 else 128 - code
            if all(code == 0 for code in codes):
                return 0
            time.sleep(poll)
    except BaseException:
        stop(children)
        raise


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal N`` for a number without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stop(children: Sequence[subprocess.Popen], grace: float = 10.0) -> None:
    """Stops the children still running: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def check_shared(directory, what: str = "the store") -> None:
    """Raises :class:`ProcessesError` on every process unless all of them see ``directory`` as one
    directory (a shared filesystem mounted at the same path): process 0 writes a file there and
    every process looks for it. Every process calls it (it is collective); a no-op for one."""
    import jax

    if jax.process_count() == 1:
        return
    import numpy as np
    from jax.experimental import multihost_utils

    from w2s_jax.atomic_write import atomic_write_text

    directory = Path(directory).absolute()
    token = int(np.random.default_rng().integers(1, 2**31)) if jax.process_index() == 0 else 0
    token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
    probe = directory / f".shared-{token}"
    if jax.process_index() == 0:
        atomic_write_text(probe, str(token))
    multihost_utils.sync_global_devices(f"shared-{token}-written")
    seen = probe.is_file()
    everyone = np.asarray(multihost_utils.process_allgather(np.int32(seen))).reshape(-1)
    multihost_utils.sync_global_devices(f"shared-{token}-read")
    if jax.process_index() == 0:
        probe.unlink(missing_ok=True)
    blind = [i for i, ok in enumerate(everyone) if not ok]
    if blind:
        raise ProcessesError(f"{what} {directory} is not shared: process(es) {blind} cannot see a file "
                             f"process 0 wrote there; every host must mount it at the same path "
                             f"(a shared filesystem)")
