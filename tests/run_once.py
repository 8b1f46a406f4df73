"""What one test run builds once and every pytest-xdist worker shares: the PostgreSQL server and the small
universe's nightly build.

Workers are separate processes; they see the controller's base temporary folder (each worker's own is a
folder inside it), so what is built once lives in `<controller basetemp>/shared/<name>/`, built under a
file lock by the first worker that asks for it and described by `<name>.json`, which the others read. A
build that failed leaves its error there instead, so the other workers fail at once with it rather than
building again. The controller (or a run without workers) stops the server when the session ends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Callable

import psycopg
from filelock import FileLock
from psycopg import conninfo, sql

POSTGRES = "postgres"


class SharedBuildFailed(RuntimeError):
    """A build another worker (or an earlier test) started failed; its first error is the message."""


def run_folder(base_temp: Path) -> Path:
    """The folder every worker of this run shares, from a process's pytest base temporary folder."""
    root = base_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else base_temp
    folder = root / "shared"
    folder.mkdir(exist_ok=True)
    return folder


def once(folder: Path, name: str, build: Callable[[Path], dict]) -> dict:
    """`build(folder / name)`'s record, built by the first process that asks, under a lock; later callers
    (any worker) get the record it wrote. `build` returns something JSON can hold."""
    record = folder / f"{name}.json"
    with FileLock(str(folder / f"{name}.lock")):
        if record.exists():
            saved = json.loads(record.read_text())
            if "error" in saved:
                raise SharedBuildFailed(f"the shared build {name!r} failed: {saved['error']}")
            return saved
        target = folder / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        try:
            result = build(target)
        except BaseException as error:
            record.write_text(json.dumps({"error": "".join(traceback.format_exception_only(error)).strip()}))
            raise
        record.write_text(json.dumps(result))
        return result


def private_server_folder() -> Path:
    """A fresh folder for an embedded server's data. pytest's own temporary folders are closed to other
    users (0700), and as root the server runs as another user that must traverse to its data: this
    folder is ours, so we may let others traverse it (0711: not list it)."""
    folder = Path(tempfile.mkdtemp(prefix="kfs-test-pg-"))
    folder.chmod(0o711)
    return folder


def shared_server(folder: Path) -> dict:
    """The run's PostgreSQL: `KFS_PG_DSN`'s server when set, else one embedded server for the whole run.
    Returns {"admin_dsn", "prefix", "pgdata" (embedded only)}: databases of this run start with `prefix`."""
    def start(_: Path) -> dict:
        prefix = f"kfs_test_{uuid.uuid4().hex[:8]}"
        external = os.environ.get("KFS_PG_DSN")
        if external:
            return {"admin_dsn": external, "prefix": prefix, "pgdata": None}
        from source.pg_server import EmbeddedServer

        pgdata = private_server_folder() / "data"
        server = EmbeddedServer(pgdata)
        server.start()
        return {"admin_dsn": server.dsn(POSTGRES), "prefix": prefix, "pgdata": str(pgdata)}
    return once(folder, POSTGRES, start)


def create_database(server: dict, suffix: str) -> str:
    """A new database of this run on the shared server; its DSN."""
    name = f"{server['prefix']}_{suffix}"
    with psycopg.connect(server["admin_dsn"], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(server["admin_dsn"], dbname=name)


def stop_shared_server(folder: Path) -> None:
    """End of the run: the embedded server stopped and removed, or this run's databases dropped from
    `KFS_PG_DSN`'s server."""
    record = folder / f"{POSTGRES}.json"
    if not record.exists():
        return
    server = json.loads(record.read_text())
    if "error" in server:
        return
    if server["pgdata"]:
        from source.pg_server import EmbeddedServer

        pgdata = Path(server["pgdata"])
        EmbeddedServer(pgdata).destroy()
        shutil.rmtree(pgdata.parent, ignore_errors=True)
        return
    with psycopg.connect(server["admin_dsn"], autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                (server["prefix"] + "%",))]
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
