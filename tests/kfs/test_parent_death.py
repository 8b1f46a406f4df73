"""A process `kfs` starts to run Dagster runs ends when `kfs` dies, even by SIGKILL (issue 28, F8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# A parent that starts a child, which asks to end with it and then sleeps; the parent prints the child's pid.
PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
    print(child.pid, flush=True)
    time.sleep(600)
""")
CHILD = "import sys, time; from kfs.interrupts import end_with_parent; {call}; print('ready', flush=True); time.sleep(600)"


def _orphan_alive_after_parent_killed(call: str) -> bool:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD.format(call=call)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"  # the child's own line, through the inherited stdout
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _running(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    return alive


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_that_asked_ends_with_its_killed_parent_and_one_that_did_not_lives_on():
    assert not _orphan_alive_after_parent_killed("end_with_parent(int(sys.argv[1]))")
    assert _orphan_alive_after_parent_killed("None")  # without it the orphan lives on: the test can fail
