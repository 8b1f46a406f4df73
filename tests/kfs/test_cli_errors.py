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


@pytest.mark.parametrize("argv, argument", [
    (["simulate", "--days", "100000"], "--days"),
    (["simulate", "--days", "0"], "--days"),
    (["simulate", "--markets", "-3"], "--markets"),
    (["simulate", "--signal", "nan"], "--signal"),
    (["train", "--seconds", "-5"], "--seconds"),
    (["train", "--seconds", "nan"], "--seconds"),
    (["train", "--steps", "0"], "--steps"),
    (["live", "--follow", "--poll", "-1"], "--poll"),
    (["live", "--follow", "--reload-every", "nan"], "--reload-every"),
    (["live", "--follow", "--batch-events", "0"], "--batch-events"),
])
def test_bad_numbers_are_refused_before_anything_runs(argv, argument, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].startswith(f"kfs {argv[0]}: error: argument {argument}"), err


def test_a_nan_train_seconds_setting_is_refused(monkeypatch):
    from core.settings import SettingsError, settings

    monkeypatch.setenv("KFS_TRAIN_SECONDS", "nan")
    with pytest.raises(SettingsError, match="KFS_TRAIN_SECONDS must be a finite number"):
        settings()


def test_a_simulation_before_2020_is_refused_before_the_tables_are_dropped(pg_dsn, fresh_tables, tmp_path, monkeypatch,
                                                                         capsys):
    import psycopg

    from tests.conftest import source_environment

    tables = fresh_tables()
    for key, value in source_environment(pg_dsn, tables, tmp_path).items():
        monkeypatch.setenv(key, value)
    assert main(["simulate", "--markets", "2", "--days", "1", "--start", "2026-03-02"]) == 0
    with psycopg.connect(pg_dsn) as conn:
        before = conn.execute(f"SELECT count(*) FROM {tables.deltas}").fetchone()[0]
    capsys.readouterr()
    for start, message in (("1900-01-01", "--start must be 2020-01-02 or later"), ("2300-01-01", "must end by")):
        assert main(["simulate", "--markets", "2", "--days", "1", "--start", start, "--replace"]) == 2
        assert message in capsys.readouterr().err
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {tables.deltas}").fetchone()[0] == before > 0


def test_a_directory_where_a_file_belongs_is_refused_at_once(tmp_path, capsys):
    assert main(["evaluate", "--split", "validation", "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a directory" in capsys.readouterr().err
    assert main(["live", "--recording", str(tmp_path)]) == 2
    assert f"--recording {tmp_path} is a directory" in capsys.readouterr().err
    (tmp_path / "recording.jsonl").write_text("")
    (tmp_path / "out").write_text("")
    assert main(["live", "--recording", str(tmp_path / "recording.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_today_can_be_materialized_and_reconciled(small_env, capsys):
    today = datetime.now(timezone.utc).date().isoformat()
    assert main(["materialize", "--start", today, "--only", "ingest"]) == 0, capsys.readouterr().err
    assert main(["reconcile", "--start", today]) == 0, capsys.readouterr().err
    assert small_env.raw_partition("deltas", datetime.now(timezone.utc).date()).exists()


def test_a_second_training_run_on_a_lake_is_refused_at_once(tmp_path, monkeypatch, capsys):
    from core.catalog import Lake
    from core.locks import exclusive_or_refuse

    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("KFS_HOME", str(tmp_path / "home"))
    with exclusive_or_refuse(Lake().training_lock(), "a `kfs train` on this lake"):
        assert main(["train", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert f"a `kfs train` on this lake is already running (pid {os.getpid()}" in err
    assert not Lake().candidate().exists()


def test_a_damaged_warehouse_is_one_line_with_the_fix(small_env, tmp_path, capsys):
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(os.urandom(8192))
    assert main(["materialize", "--start", SMALL_START.isoformat(), "--only", "features"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"the warehouse {warehouse} cannot be opened" in err and f"rm {warehouse}" in err


def test_a_dbt_failure_shows_dbt_s_own_first_error(tmp_path):
    from kfs.cli import dbt_error_line

    parsed = ("The dbt CLI process with command\n\n`dbt build`\n\nfailed with exit code `1`. Check the stdout.\n\n"
              "Errors parsed from dbt logs:\n\nRuntime Error in model markets (models/marts/markets.sql)\n\n  more")
    assert dbt_error_line(parsed) == "Runtime Error in model markets (models/marts/markets.sql)"
    log = tmp_path / "dbt.log"
    log.write_text("12:00:00  Running with dbt=1.11\n12:00:01  [error] Catalog Error: Table with name x does not exist\n")
    from_log = f"The dbt CLI process with command\n\n`dbt build`\n\nfailed, or view the dbt debug log: {log}."
    assert dbt_error_line(from_log) == "12:00:01  [error] Catalog Error: Table with name x does not exist"


def test_a_failed_blocking_check_is_named():
    from dagster._core.errors import DagsterAssetCheckFailedError

    error = DagsterAssetCheckFailedError("1 blocking asset check failed with ERROR severity:\n"
                                         "features_events: depth_sums_not_null")
    assert describe_error(error) == (1, "1 blocking asset check failed with ERROR severity: features_events: "
                                        "depth_sums_not_null")


def test_an_unreachable_dagster_storage_is_one_line_naming_its_variable(pg_dsn, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KFS_ENV", "prod")
    monkeypatch.setenv("KFS_PG_DSN", pg_dsn)
    monkeypatch.setenv("KFS_DAGSTER_PG_DSN", "postgresql://dagster:hunter2secret@127.0.0.1:1/dagster")
    monkeypatch.setenv("KFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["materialize", "--start", SMALL_START.isoformat(), "--only", "features"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "KFS_DAGSTER_PG_DSN" in err and "hunter2secret" not in err


def test_refused_object_storage_keys_on_reconcile_are_one_line(pg_dsn, s3_lake, monkeypatch, capsys):
    monkeypatch.setenv("KFS_PG_DSN", pg_dsn)
    monkeypatch.setenv("KFS_LAKE", s3_lake)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    assert main(["reconcile"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "denied" in err and "not-the-key" not in err
