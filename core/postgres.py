"""Connections to PostgreSQL: retries with backoff, errors without secrets, quoted identifiers.

The read path takes a DSN and connects; it never decides where the server is (that is the
application's job: `source.pg_server.source_dsn`), so production code cannot start a dev server.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import conninfo

CONNECT_ATTEMPTS = 4
CONNECT_BACKOFF_S = 0.5
CONNECT_TIMEOUT_S = 5


class SourceUnavailable(RuntimeError):
    """PostgreSQL could not be reached; the message names the server, never the password."""


def describe_dsn(dsn: str) -> str:
    """`user@host:port/dbname`: enough to find the server, nothing secret."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user") or "?"
    dbname = params.get("dbname") or user
    return f"{user}@{host}:{port}/{dbname}"


def redact(text: str, dsn: str) -> str:
    """Remove the DSN's password (and the DSN itself) from a message before it is shown or stored."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    text = text.replace(dsn, describe_dsn(dsn))
    if password:
        text = text.replace(str(password), "***")
    return text


def connect(dsn: str, *, autocommit: bool = False, attempts: int = CONNECT_ATTEMPTS) -> psycopg.Connection:
    """Connect with exponential backoff; raise SourceUnavailable with one clean line on failure."""
    last_error: Exception | None = None
    for attempt in range(attempts):
        try:
            return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.ProgrammingError:  # libpq could not parse the DSN; its message would repeat it
            raise SourceUnavailable(f"cannot connect to PostgreSQL: the connection string for {describe_dsn(dsn)} "
                                    "is not valid") from None
        except psycopg.OperationalError as error:
            last_error = error
            if attempt + 1 < attempts:
                time.sleep(CONNECT_BACKOFF_S * 2**attempt)
    reason = redact(str(last_error).strip().splitlines()[0] if last_error else "unknown error", dsn)
    raise SourceUnavailable(
        f"cannot connect to PostgreSQL at {describe_dsn(dsn)} after {attempts} attempts: {reason}"
    ) from None


@contextmanager
def connection(dsn: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    conn = connect(dsn, autocommit=autocommit)
    try:
        yield conn
        if not autocommit:
            conn.commit()
    except BaseException:
        if not autocommit and not conn.closed:
            conn.rollback()
        raise
    finally:
        conn.close()


def table_identifier(name: str) -> psycopg.sql.Identifier:
    """`table` or `schema.table` from configuration, quoted by the driver (never pasted into SQL)."""
    if not name or name.count(".") > 1:
        raise ValueError(f"bad table name {name!r}: expected 'table' or 'schema.table'")
    return psycopg.sql.Identifier(*name.split("."))
