"""The embedded PostgreSQL: passwords for everyone (no trust), no folder opened up, an explicit stop wins."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from core.postgres import SourceUnavailable
from source.pg_server import EmbeddedServer, EmbeddedServerError
from tests.run_once import private_server_folder

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when kfs runs as root")


@pytest.fixture
def server():
    folder = private_server_folder()
    embedded = EmbeddedServer(folder / "data")
    embedded.start()
    yield embedded
    embedded.destroy()
    shutil.rmtree(folder, ignore_errors=True)


def _without_password(dsn: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.pop("password")
    return psycopg.conninfo.make_conninfo(**params)


def _authentication_methods(server: EmbeddedServer) -> set[str]:
    rules = [line.split() for line in (server.pgdata / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {rule[-1] for rule in rules}


def test_every_connection_needs_the_password_and_the_password_file_is_private(server):
    with psycopg.connect(server.dsn("postgres")) as conn:
        assert conn.execute("SELECT current_setting('password_encryption')").fetchone()[0] == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_without_password(server.dsn("postgres")), connect_timeout=5)
    assert _authentication_methods(server) == {"scram-sha-256"}
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600


def test_a_local_user_without_the_password_cannot_run_programs_through_the_server(server):
    """The reproduction of the finding: `COPY ... TO PROGRAM` as the superuser, from any local account."""
    marker = server.pgdata.parent / "pwned"
    with pytest.raises(psycopg.OperationalError):
        with psycopg.connect(_without_password(server.dsn("postgres")), connect_timeout=5) as conn:
            conn.execute(f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'")
    assert not marker.exists()


def test_a_cluster_from_before_passwords_is_secured_when_it_starts(server):
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    server.password_file.unlink()
    server.stop()
    server.start()
    assert server.password_file.exists() and _authentication_methods(server) == {"scram-sha-256"}
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_without_password(server.dsn("postgres")), connect_timeout=5)


@as_root
def test_starting_as_root_opens_no_folder_above_the_data(tmp_path):
    folder = private_server_folder()
    parents = [folder, *folder.parents]
    modes = {p: p.stat().st_mode for p in parents}
    embedded = EmbeddedServer(folder / "data")
    try:
        embedded.start()
        assert {p: p.stat().st_mode for p in parents} == modes
    finally:
        embedded.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@as_root
def test_a_closed_folder_above_the_data_is_a_clear_error_not_a_chmod(tmp_path):
    closed = Path(tmp_path)  # pytest's folders are 0700
    mode = closed.stat().st_mode
    with pytest.raises(EmbeddedServerError, match=r"cannot reach .* is drwx------.*KFS_HOME"):
        EmbeddedServer(closed / "pg").start()
    assert closed.stat().st_mode == mode


def test_an_explicit_stop_wins_against_runs_that_would_restart_the_server(server):
    restarts = {"refused": 0, "started": 0}
    stopping = threading.Event()

    def eager_run():  # what an ingest does: start the server on demand, again and again
        while not stopping.is_set():
            try:
                server.start(explicit=False)
                restarts["started"] += 1
            except SourceUnavailable:
                restarts["refused"] += 1
            time.sleep(0.01)

    worker = threading.Thread(target=eager_run)
    worker.start()
    try:
        time.sleep(0.2)
        started = time.perf_counter()
        assert server.stop()
        time.sleep(0.5)
        assert not server.is_running(), "a run restarted the server after `kfs pg stop`"
        assert time.perf_counter() - started < 30
    finally:
        stopping.set()
        worker.join()
    assert restarts["refused"] > 0
    with pytest.raises(SourceUnavailable, match="kfs pg stop"):
        server.start(explicit=False)
    server.start()
    assert server.is_running()


def test_kfs_pg_commands_never_print_the_password(tmp_path):
    env = dict(os.environ, KFS_HOME=str(private_server_folder()))
    env.pop("KFS_PG_DSN", None)
    try:
        started = subprocess.run([sys.executable, "-m", "kfs.cli", "pg", "start"], env=env, capture_output=True,
                                 text=True, timeout=120)
        status = subprocess.run([sys.executable, "-m", "kfs.cli", "pg", "status"], env=env, capture_output=True,
                                text=True, timeout=60)
        password = (Path(env["KFS_HOME"]) / "pg.password").read_text().strip()
        assert started.returncode == 0 and status.returncode == 0, started.stderr + status.stderr
        assert "postgres@127.0.0.1" in started.stdout and password not in started.stdout + status.stdout
    finally:
        subprocess.run([sys.executable, "-m", "kfs.cli", "pg", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(env["KFS_HOME"], ignore_errors=True)
