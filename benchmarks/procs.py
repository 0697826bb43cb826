"""Process ownership: workers that die with their parent, and owners of runs that can be checked.

A run (an MLflow run, a trial of a work queue) records its owner: host name, process id and the
process's start time (clock ticks since boot, from ``/proc/<pid>/stat``; it tells a live process from
a later one that reuses the pid). On the same host, a run whose owner is gone was left by a killed
process and may be closed (``owner_gone``). Linux only where ``/proc`` or ``prctl`` is needed; elsewhere
the checks answer "unknown" and nothing is closed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket

PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent thread dies
OWNER_KEYS = ("owner_host", "owner_pid", "owner_start")  # tag / user-attr names
SIGNAL_EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}  # exit codes: 128 + signal number


def process_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, as text), or None when it does not
    exist (or is a zombie, or /proc is missing)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115  (one short read)
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return None if fields[0] in ("Z", "X") else fields[19]  # field 22: starttime


def owner() -> dict[str, str]:
    """The owner tags of this process."""
    return {
        "owner_host": socket.gethostname(),
        "owner_pid": str(os.getpid()),
        "owner_start": process_start(os.getpid()) or "",
    }


def owner_gone(tags: dict[str, str]) -> bool:
    """True when ``tags`` name an owner on this host that no longer runs (pid dead, or reused by a
    process that started at another time); False when alive, on another host, or unknown."""
    if tags.get("owner_host") != socket.gethostname() or not str(tags.get("owner_pid", "")).isdigit():
        return False
    if not os.path.isdir("/proc"):
        return False
    start = process_start(int(tags["owner_pid"]))
    return start is None or (bool(tags.get("owner_start")) and start != tags["owner_start"])


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl), then check the
    parent is still there (it may have died before the call): exit at once if not."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's own shutdown still stops workers
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT turned into an exception (so MLflow runs end KILLED); ``signum`` names it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class GridInterrupted(Exception):
    """A grid stopped by a signal: ``line`` says what finished and what will rerun; ``code`` is
    the exit status (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line)
        self.line, self.code = line, code


def raise_on_signals() -> None:
    """SIGTERM and SIGINT raise ``Interrupted`` in the main thread."""

    def handler(signum, frame):
        raise Interrupted(signum)

    for sig in SIGNAL_EXIT:
        try:
            signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
