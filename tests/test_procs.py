"""Process ownership: a child dies with its parent (even on SIGKILL), a dead or reused pid is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from benchmarks.procs import owner, owner_gone, process_start
from tests.test_reliability import ENV, alive, wait_for

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(__import__("os").getpid())])
print(child.pid, flush=True)
time.sleep(120)
"""
CHILD = """
import sys, time
from benchmarks.procs import die_with_parent
die_with_parent(int(sys.argv[1]))
print("armed", flush=True)
time.sleep(120)
"""


def test_a_child_dies_when_its_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "armed"
    assert alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    wait_for(lambda: not alive(child), 5, "the child gone after SIGKILL of its parent")


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    code = "import os; from benchmarks.procs import die_with_parent; die_with_parent(os.getppid() + 1); print('ran on')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 1 and "ran on" not in out.stdout


def test_owner_tags_tell_live_dead_and_reused_processes():
    me = owner()
    assert me["owner_pid"] == str(os.getpid()) and me["owner_start"] == process_start(os.getpid())
    assert not owner_gone(me)
    assert owner_gone({**me, "owner_start": str(int(me["owner_start"]) + 1)}), "pid reused by a later process"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(timeout=30)
    time.sleep(0.1)
    assert owner_gone({**me, "owner_pid": str(done.pid), "owner_start": "1"})
    assert not owner_gone({**me, "owner_host": socket.gethostname() + "-elsewhere", "owner_pid": str(done.pid)})
    assert not owner_gone({}), "runs without owner tags are left alone"
