"""dbt as a child that dies with its parent.

dagster-dbt starts dbt as a subprocess. When the process running the asset is killed with SIGKILL it
cannot stop that subprocess, and an orphaned `dbt build` would go on holding DuckDB's single write lock
while the next run tries to take it. `DbtCliResource` therefore runs a small wrapper (written once per
`KFS_HOME` by `watched_dbt_executable`) that starts the real dbt, forwards SIGTERM/SIGINT to it, and
terminates it as soon as the process that started the wrapper is gone.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

PARENT_POLL_S = 0.25
TERMINATE_GRACE_S = 5.0


def _terminate(child: subprocess.Popen) -> None:
    child.terminate()
    try:
        child.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def installed_versions() -> str:
    """What `dbt --version` says first, read from the installed packages: dagster-dbt asks for it once per step
    and parses the core version. dbt itself takes 8 s here to import its CLI and then asks PyPI for the latest
    release, which an offline machine waits for."""
    from importlib.metadata import version

    return (f"Core:\n  - installed: {version('dbt-core')}\n\n"
            f"Plugins:\n  - duckdb: {version('dbt-duckdb')}\n")


def run_watched(executable: str, args: list[str]) -> int:
    """Run `executable args`, stopping it when our parent dies or asks us to stop; its exit status."""
    if args == ["--version"]:
        sys.stdout.write(installed_versions())
        return 0
    parent = os.getppid()
    child = subprocess.Popen([executable, *args])

    def forward(signum, frame):
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while child.poll() is None:
        if os.getppid() != parent:  # reparented: the process that started us was killed
            _terminate(child)
            return 137
        time.sleep(PARENT_POLL_S)
    return child.returncode


def watched_dbt_executable(home: Path, real_dbt: str) -> str:
    """Path of the wrapper script for this interpreter and dbt (rewritten only when they change)."""
    script = home / "bin" / "dbt"
    text = (f"#!{sys.executable}\n# written by orchestration/dbt_child.py: dbt that dies with its parent\n"
            "import sys\nfrom orchestration.dbt_child import run_watched\n"
            f"sys.exit(run_watched({real_dbt!r}, sys.argv[1:]))\n")
    if not script.exists() or script.read_text() != text:
        script.parent.mkdir(parents=True, exist_ok=True)
        tmp = script.with_name(f".dbt-{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(tmp, script)
    return str(script)
