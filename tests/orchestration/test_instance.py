"""The Dagster instance configuration: SQLite locally, PostgreSQL in prod, the URL never on disk."""

from pathlib import Path

import pytest

from core.settings import Settings, SettingsError
from orchestration.instance import (
    STORAGE_URL_VARIABLE,
    postgres_url,
    write_instance_config,
)


def test_postgres_urls_from_either_dsn_form_quote_the_credentials():
    assert postgres_url("postgresql://u:p%40ss@db.example:5433/dag") == "postgresql+psycopg2://u:p%40ss@db.example:5433/dag"
    assert postgres_url("host=db user=kfs password='a b/c' dbname=x sslmode=require") == \
        "postgresql+psycopg2://kfs:a%20b%2Fc@db/x?sslmode=require"


def test_local_keeps_sqlite_and_prod_names_only_the_variable(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(STORAGE_URL_VARIABLE, raising=False)
    local = write_instance_config(tmp_path / "local", Settings())
    assert "storage:" not in local.read_text() and STORAGE_URL_VARIABLE not in __import__("os").environ

    prod = Settings(env="prod", pg_dsn="postgresql://kfs:secretpw@db/recorder", dagster_pg_dsn="postgresql://d:dagpw@db/dag")
    text = write_instance_config(tmp_path / "prod", prod).read_text()
    assert f"env: {STORAGE_URL_VARIABLE}" in text and "secretpw" not in text and "dagpw" not in text
    assert __import__("os").environ[STORAGE_URL_VARIABLE] == "postgresql+psycopg2://d:dagpw@db/dag"
    assert Settings(env="prod", pg_dsn="postgresql://kfs:pw@db/recorder").dagster_storage_dsn == "postgresql://kfs:pw@db/recorder"


@pytest.mark.parametrize("variables, message", [
    ({"KFS_WORKERS": "0"}, "KFS_WORKERS must be between 1 and 256"),
    ({"KFS_DASK_SCHEDULER": "localhost:8786"}, "KFS_DASK_SCHEDULER must be a scheduler address"),
    ({"KFS_DAGSTER_PG_DSN": "postgresql://u:pw@[bad"}, "KFS_DAGSTER_PG_DSN is not a valid PostgreSQL connection string"),
])
def test_scale_out_settings_fail_with_one_line(variables, message):
    with pytest.raises(SettingsError, match=message) as error:
        Settings.from_env(variables)
    assert "u:pw" not in str(error.value)  # the DSN, which may hold a password, is never echoed
