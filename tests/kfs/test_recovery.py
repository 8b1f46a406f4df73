"""A run killed with SIGKILL, mid-ingest or mid-dbt, leaves nothing that blocks or changes the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, source_environment
from tests.processes import cmdline, descendants

RERUN_BOUND_S = 240  # a clean run takes ~25 s here; a run blocked by a dead one never ends


def _env(small_universe, root: Path) -> dict:
    return dict(os.environ, **source_environment(small_universe["dsn"], small_universe["tables"], root),
                DAGSTER_HOME=str(root / "dagster"))


def _materialize(env: dict, days) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kfs.cli", "materialize", "--start", days[0].isoformat(), "--end",
                             days[-1].isoformat()], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _lake_files(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*.parquet"))
            if not p.name.startswith(".")}


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> dict[int, str]:
    """SIGKILL `process` once `ready(commands)` holds for the command lines of the processes it has started;
    returns those processes as seen at that moment (pid -> command line), to check they die too. One look
    serves both: a short-lived child (`dbt --version`) seen by a second look could be gone already."""
    deadline = time.monotonic() + timeout
    while True:
        children = {pid: cmdline(pid) for pid in descendants(process.pid)}
        if ready(children.values()):
            break
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the moment to kill it"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    return children


def _finishes(env: dict, days) -> str:
    rerun = _materialize(env, days)
    out, _ = rerun.communicate(timeout=RERUN_BOUND_S)
    assert rerun.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_a_killed_run_blocks_nothing_and_the_rerun_writes_a_clean_runs_bytes(small_universe, small_lake, nightly_days,
                                                                              tmp_path):
    # The clean run of the same range is the shared nightly build (its lake, without the models it also wrote).
    expected = _lake_files(small_lake.root)

    killed = _env(small_universe, tmp_path / "killed")
    lake = tmp_path / "killed" / "lake"
    mid_ingest = _materialize(killed, nightly_days)
    _kill_when(mid_ingest, lambda _: any(lake.glob("raw/*/date=*/*.parquet")))

    # The next run gets past everything the killed one left (its pool slots, locks, half-written days) as far
    # as dbt, where it is killed in turn: a run blocked by the first kill never reaches dbt and fails here.
    mid_dbt = _materialize(killed, nightly_days)
    orphans = _kill_when(mid_dbt, lambda commands: any(" build " in c and "dbt" in c for c in commands),
                         timeout=RERUN_BOUND_S)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{p}").exists() for p in orphans) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in orphans if Path(f"/proc/{p}").exists()], "dbt outlived the run that started it"
    out = _finishes(killed, nightly_days)
    assert "reclaimed the pool slots of run" in out

    assert _lake_files(lake) == expected
