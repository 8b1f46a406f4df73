"""The `kfs` command line."""

from __future__ import annotations

from tests.conftest import SMALL_START


def test_materialize_cli_runs_a_range_with_progress(small_env, monkeypatch, tmp_path, capsys):
    from kfs.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    end = SMALL_START.replace(day=SMALL_START.day + 1)
    assert main(["materialize", "--start", SMALL_START.isoformat(), "--end", end.isoformat()]) == 0
    assert "materialized 2 partitions (ingest, features); 0 failed checks" in capsys.readouterr().out
    assert small_env.partitions("trades") == [SMALL_START, end]
    assert small_env.location("markets_mart").exists()
    assert (tmp_path / "home" / "logs" / "dbt.log").stat().st_size > 0
    # what holds queries, row values and run configuration is its owner's only
    for private, mode in ((tmp_path / "home" / "logs", 0o700), (tmp_path / "dagster", 0o700),
                          (tmp_path / "warehouse.duckdb", 0o600)):
        assert private.stat().st_mode & 0o777 == mode, private
    assert main(["materialize", "--start", end.isoformat(), "--end", SMALL_START.isoformat()]) == 2
