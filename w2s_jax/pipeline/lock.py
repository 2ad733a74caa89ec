"""One writer per stage: an advisory lock file held by a live process.

A process that works on a stage holds ``fcntl.flock`` on the stage's lock file for as long as it
works, and writes its pid, host and start time into the file so a second process can say who holds
it. The kernel releases a ``flock`` when its holder exits, however it exits (a kill, a crash, a
power cut of the process), so a lock can never outlive its holder: a second process finds the file
with the dead holder's details and takes it over. A second process on the same work waits for the
holder (and then finds the work done) or, with ``wait=False``, refuses with one line.

Locks are per (stage, process index): the processes of one multi-process run each write their own
part file and take their own lock, while two separate runs of the same stage (process 0 in both)
exclude each other, so no part file ever has two writers.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path


class StageBusy(RuntimeError):
    """The stage is being computed by another live process (``wait=False``)."""


def holder_text(path: Path) -> str:
    """Who the lock file says holds (or last held) it, in words."""
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class StageLock:
    """A context manager holding the lock file ``path`` (see the module docstring).

    Arguments:
      path: the lock file (created if missing; never deleted, so its inode is stable).
      wait: wait for a live holder (polling every ``poll`` seconds) instead of refusing.
      log: where to say that this process waits or takes over a dead holder's lock.
    """

    def __init__(self, path: str | Path, *, wait: bool = True, poll: float = 0.5,
                 log: Callable[[str], None] = print):
        self.path, self.wait, self.poll, self.log = Path(path), wait, poll, log
        self._fd: int | None = None
        self.took_over_from: str | None = None  # the dead holder's details, when taken over

    def __enter__(self) -> "StageLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise StageBusy(f"{self.path.parent.name}: being computed by {holder_text(self.path)}; "
                                    "wait for it to finish") from None
                if not told:
                    self.log(f"[wait] {self.path.parent.name}: held by {holder_text(self.path)}")
                    told = True
                time.sleep(self.poll)
        previous = self._previous_holder()
        if previous is not None:
            self.took_over_from = previous
            self.log(f"[lock] {self.path.parent.name}: taking over from {previous} (no longer running)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _previous_holder(self) -> str | None:
        """The details a holder left behind: a clean release empties the file, so details found
        while we hold the flock are those of a holder that died without releasing it."""
        try:
            info = json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None
        return holder_text(self.path) if isinstance(info, dict) and "pid" in info else None

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean release leaves no holder behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
