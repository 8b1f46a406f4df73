"""`kfs pg start|stop|status|url`: the embedded PostgreSQL (used when KFS_PG_DSN is unset)."""

from __future__ import annotations

import argparse

from core.postgres import describe_dsn
from core.settings import settings
from kfs.console import console
from source.pg_server import embedded_server, source_dsn


def run(args: argparse.Namespace) -> int:
    server = embedded_server()
    if settings().pg_dsn and args.action != "url":
        console.print("KFS_PG_DSN is set: kfs uses that server, the embedded one is not needed.")
    if args.action == "start":
        dsn = server.start()
        console.print(f"embedded PostgreSQL running: {describe_dsn(dsn)}")
    elif args.action == "stop":
        console.print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        running = server.is_running()
        console.print(f"embedded PostgreSQL in {server.pgdata}: "
                      f"{'running at ' + describe_dsn(server.dsn()) if running else 'not running'}")
        return 0 if running else 3
    elif args.action == "url":
        print(source_dsn(start_embedded=False))
    return 0
