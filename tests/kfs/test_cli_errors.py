"""Every bad input or failure is one line on stderr with the right exit status; never a traceback or a secret."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import pytest

from kfs.cli import describe_error, main
from tests.conftest import REPO, SMALL_START


def _kfs(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfs.cli", *args], env=env or dict(os.environ), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(result: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("kfs: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["materialize", "--start", "2025-12-31"], "before the first partition 2026-01-01"),
    (["materialize", "--start", "2099-01-01"], "is in the future"),
    (["materialize", "--start", "2026-03-05", "--end", "2026-03-01"], "is before --start"),
    (["materialize", "--start", "03/02/2026"], "expects a date as YYYY-MM-DD"),
])
def test_days_without_a_partition_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_missing_source_table_is_named_with_its_variable(small_env, monkeypatch, capsys):
    monkeypatch.setenv("KFS_TABLE_TRADES", "no_such_table")
    assert main(["materialize", "--start", SMALL_START.isoformat()]) == 2
    err = capsys.readouterr().err.strip()
    assert "source table no_such_table (KFS_TABLE_TRADES) does not exist" in err and "\n" not in err


def test_a_malformed_dsn_never_prints_its_password(tmp_path):
    env = dict(os.environ, KFS_PG_DSN="postgresql://u:secretpw@[bad/x", KFS_HOME=str(tmp_path))
    for argv in (["db", "init"], ["simulate", "--markets", "2", "--days", "1"]):
        result = _kfs(*argv, env=env)
        line = _one_error_line(result, 2, "KFS_PG_DSN is not a valid PostgreSQL connection string")
        assert "secretpw" not in result.stderr + result.stdout, line


def test_a_directory_and_unreadable_recordings_are_one_line(tmp_path, pg_dsn):
    env = dict(os.environ, KFS_PG_DSN=pg_dsn, KFS_HOME=str(tmp_path))
    _one_error_line(_kfs("load-recording", str(tmp_path), env=env), 2, "is a directory")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b'{"type": "trade"}\n\xff\xfe not utf-8\n')
    _one_error_line(_kfs("load-recording", str(garbage), env=env), 2, str(garbage), "not UTF-8")


TRADE = {"type": "trade", "msg": {"market_ticker": "KXT-1", "yes_price": 40, "count": 3, "taker_side": "yes",
                                   "ts": 1775001600}}


@pytest.mark.parametrize("change, message", [
    ({"count": 0}, "not a positive number of contracts"),
    ({"taker_side": "buy"}, "taker_side 'buy'"),
    ({"market_ticker": None}, "without a market_ticker"),
    ({"yes_price": 99999999999}, "outside 1..99"),
    ({"ts": 1e30}, "outside 1970..9999"),
])
def test_recording_frames_that_break_the_source_constraints_name_file_and_line(tmp_path, pg_dsn, change, message):
    frames = [TRADE, {**TRADE, "msg": {**TRADE["msg"], **change}}]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(frame) for frame in frames) + "\n")
    env = dict(os.environ, KFS_PG_DSN=pg_dsn, KFS_HOME=str(tmp_path))
    _one_error_line(_kfs("load-recording", str(path), env=env), 2, f"{path}:2", message)


def test_disk_full_and_other_os_errors_are_one_line():
    full = OSError(errno.ENOSPC, "No space left on device", "/lake/raw/trades/part.parquet")
    assert describe_error(full) == (1, "No space left on device: /lake/raw/trades/part.parquet")


def test_a_disk_full_during_a_run_is_one_line_through_dagster(small_env, monkeypatch, capsys):
    import core.catalog

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/lake/raw/deltas")

    monkeypatch.setattr(core.catalog, "write_parquet_atomic", full_disk)
    assert main(["materialize", "--start", SMALL_START.isoformat(), "--only", "ingest"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "kfs: error: No space left on device: /lake/raw/deltas"


def test_a_warning_check_exits_zero_with_a_warning_line_and_an_error_check_exits_one(small_env, monkeypatch, capsys):
    from core.catalog import Lake
    from kfs.console import failed_checks

    monkeypatch.setenv("KFS_QUARANTINE_MAX_SHARE", "0")
    monkeypatch.setenv("KFS_TABLE_DELTAS", _table_with_one_bad_delta(small_env, monkeypatch))
    assert main(["materialize", "--start", SMALL_START.isoformat(), "--only", "ingest"]) == 0
    captured = capsys.readouterr()
    assert "kfs: warning: check raw_deltas quarantine_share_below_threshold" in captured.err
    assert "0 failed checks, 1 warnings" in captured.out
    assert Lake().partitions("deltas") == [SMALL_START]

    class Evaluation:  # an error-severity check counts as an error; its run failed
        passed, severity = False, type("Severity", (), {"value": "ERROR"})()

    class Result:
        def get_asset_check_evaluations(self):
            return [Evaluation()]

    errors, warnings = failed_checks([Result()])
    assert len(errors) == 1 and not warnings


def _table_with_one_bad_delta(small_env, monkeypatch) -> str:
    """A copy of the small universe's deltas of the first day plus one row with a negative size."""
    import psycopg

    from core.settings import settings

    dsn, source = settings().pg_dsn, settings().tables.deltas
    copy = "small.deltas_with_one_bad_row"
    start = int(datetime(SMALL_START.year, SMALL_START.month, SMALL_START.day, tzinfo=timezone.utc).timestamp() * 1000)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {copy}")
        conn.execute(f"CREATE TABLE {copy} AS SELECT * FROM {source} WHERE timestamp_ms < {start + 86_400_000}")
        conn.execute(f"INSERT INTO {copy} (id, session_id, market_ticker, timestamp_ms, sequence_number, side, action, "
                     f"price, old_size, new_size) VALUES (-1, 999, 'KXBAD', {start + 5}, 1, 'yes', 'add', 40, 0, -5)")
    return copy


def test_interrupts_stop_a_run_with_one_line(small_env, tmp_path):
    """Ctrl-C and SIGTERM: exit 130 and `kfs: interrupted`, no traceback."""
    import signal
    import time

    for sig in (signal.SIGINT, signal.SIGTERM):
        process = subprocess.Popen([sys.executable, "-m", "kfs.cli", "materialize", "--start", SMALL_START.isoformat(),
                                    "--end", (SMALL_START + timedelta(days=1)).isoformat()],
                                   env=dict(os.environ, DAGSTER_HOME=str(tmp_path / f"dagster-{sig}")), cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        process.send_signal(sig)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 130, out[-1500:] + err[-1500:]
        assert err.strip().splitlines()[-1] == "kfs: interrupted" and "Traceback" not in err


def test_today_is_the_last_partition(capsys):
    tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
    assert main(["materialize", "--start", date(2026, 1, 1).isoformat(), "--end", tomorrow.isoformat()]) == 2
    assert "in the future" in capsys.readouterr().err
