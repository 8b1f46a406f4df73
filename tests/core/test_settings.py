"""Settings: one frozen object from the `KFS_*` variables, one-line errors, and the README's table."""

from __future__ import annotations

import re
from datetime import date

import pytest

from core.settings import (
    VARIABLES,
    Settings,
    SettingsError,
    SourceTables,
    markdown_table,
)
from tests.conftest import REPO


def test_defaults_resolve_to_absolute_paths_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    current = Settings.from_env({})
    assert current.env == "local" and current.pg_dsn is None
    assert current.lake == str(tmp_path / "lake") and current.home == tmp_path / ".kfs"
    assert current.warehouse == tmp_path / ".kfs" / "warehouse.duckdb" and current.cache == tmp_path / ".kfs" / "cache"
    assert current.partitions_start == date(2026, 1, 1) and current.tables == SourceTables()
    assert current.train_seconds is None and current.train_device == "auto"


def test_every_variable_is_parsed_into_its_field():
    current = Settings.from_env({
        "KFS_ENV": "prod", "KFS_PG_DSN": "postgresql://u:pw@db/x", "KFS_LAKE": "s3://bucket/prefix/",
        "KFS_PARTITIONS_START": "2025-06-01", "KFS_TABLE_TRADES": "rec.trades", "KFS_QUARANTINE_MAX_SHARE": "0.05",
        "KFS_LATE_DAYS": "4", "KFS_TRAIN_SECONDS": "30", "KFS_TRAIN_DEVICE": "cpu"})
    assert current.env == "prod" and current.lake == "s3://bucket/prefix"
    assert current.partitions_start == date(2025, 6, 1) and current.tables.trades == "rec.trades"
    assert current.quarantine_max_share == 0.05 and current.late_days == 4 and current.train_seconds == 30.0


@pytest.mark.parametrize("name, value, message", [
    ("KFS_ENV", "staging", "KFS_ENV must be one of local, prod"),
    ("KFS_LATE_DAYS", "two", "KFS_LATE_DAYS must be an integer, got 'two'"),
    ("KFS_QUARANTINE_MAX_SHARE", "2", "KFS_QUARANTINE_MAX_SHARE must be between 0.0 and 1.0"),
    ("KFS_PARTITIONS_START", "01/02/2026", "KFS_PARTITIONS_START must be a date as YYYY-MM-DD"),
    ("KFS_TABLE_TRADES", "a.b.c", "KFS_TABLE_TRADES must be 'table' or 'schema.table'"),
    ("KFS_LAKE", "gs://bucket", "KFS_LAKE must be a local path or s3://bucket/prefix"),
    ("KFS_LAKE", "s3:///prefix", "KFS_LAKE must name a bucket"),
])
def test_bad_values_fail_with_one_line_naming_the_variable(name, value, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_prod_requires_a_dsn_and_the_dsn_is_never_printed():
    with pytest.raises(SettingsError, match="KFS_ENV=prod needs KFS_PG_DSN"):
        Settings.from_env({"KFS_ENV": "prod"})
    current = Settings.from_env({"KFS_PG_DSN": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(current) and "hunter2" not in str(current)


def test_the_readme_configuration_table_is_generated_from_the_declarations():
    readme = (REPO / "README.md").read_text()
    section = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert section, "README.md lacks the settings table markers"
    assert section.group(1).strip() == markdown_table().strip(), "stale: run `make docs`"
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def test_a_new_kfs_home_is_owner_only_and_an_existing_one_keeps_its_mode(tmp_path):
    import stat

    from core.settings import environment_overrides
    from kfs.cli import main

    new_home = tmp_path / "fresh" / "home"
    with environment_overrides(KFS_HOME=str(new_home)):
        assert main(["features", "--entities", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    assert stat.S_IMODE(new_home.stat().st_mode) == 0o700

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with environment_overrides(KFS_HOME=str(shared)):
        main(["features", "--entities", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o.csv")])
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
