"""Dagster wiring: the definitions load, and a partition materializes with its checks."""

from __future__ import annotations

import dagster as dg

from tests.conftest import SMALL_START


def test_definitions_load_with_every_raw_asset_and_check():
    from orchestration.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_snapshots", "raw_deltas", "raw_trades", "raw_markets"} <= keys
    assert defs.resolve_job_def("ingest_job") is not None
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"rows_reconcile", "quarantine_share_below_threshold"} <= checks


def test_ingest_job_materializes_a_partition_with_metadata_and_passing_checks(small_env, small_universe):
    from orchestration.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("ingest_job").execute_in_process(partition_key=SMALL_START.isoformat(), instance=instance)
    assert result.success
    materializations = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert set(materializations) == {"raw_snapshots", "raw_deltas", "raw_trades"}
    deltas_meta = materializations["raw_deltas"].materialization.metadata
    assert deltas_meta["rows_written"].value == deltas_meta["rows_source"].value > 1000
    assert deltas_meta["rows_quarantined"].value == 0
    assert deltas_meta["min_timestamp"].value.startswith(SMALL_START.isoformat())
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 6 and all(e.passed for e in evaluations)
    assert small_env.raw_partition("deltas", SMALL_START).exists()
    markets = defs.resolve_job_def("markets_job").execute_in_process(instance=instance)
    assert markets.success and small_env.raw_markets().exists()


def test_dg_check_defs_accepts_the_project():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    bin_dir = Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "dg"), "check", "defs"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr
