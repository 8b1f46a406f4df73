"""No secret reaches Dagster's logs, run config or metadata."""

from __future__ import annotations

import dagster as dg
import psycopg

from tests.conftest import SMALL_CONFIG

SECRET = "s3cr3t-hunter2"


def test_the_dsn_password_never_reaches_logs_or_metadata(small_universe, tmp_path, monkeypatch):
    secret = psycopg.conninfo.conninfo_to_dict(small_universe["dsn"])["password"]  # the server's real password
    monkeypatch.setenv("KFS_PG_DSN", small_universe["dsn"])
    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    for stream in ("snapshots", "deltas", "trades", "markets"):
        monkeypatch.setenv(f"KFS_TABLE_{stream.upper()}", getattr(small_universe["tables"], stream))
    from orchestration.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("ingest_job").execute_in_process(partition_key=SMALL_CONFIG.start.isoformat(),
                                                                  instance=instance)
    assert result.success
    records = instance.all_logs(result.run_id)
    assert records
    text = "\n".join(str(r.dagster_event) + (r.user_message or "") for r in records)
    assert secret not in text
    assert secret not in str(instance.get_run_by_id(result.run_id).run_config)
    # and an unreachable server with that password: the error names the server only
    monkeypatch.setenv("KFS_PG_DSN", f"postgresql://kfs:{SECRET}@127.0.0.1:1/kfs")
    failing = defs.resolve_job_def("ingest_job").execute_in_process(
        partition_key=SMALL_CONFIG.start.isoformat(), instance=instance, raise_on_error=False)
    assert not failing.success
    failure_text = "\n".join(str(r.dagster_event) for r in instance.all_logs(failing.run_id))
    assert "127.0.0.1:1" in failure_text and SECRET not in failure_text
