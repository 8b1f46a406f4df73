"""`kfs simulate` and the demo's simulation: a universe into the source tables (the embedded server unless
KFS_PG_DSN is set), with a progress bar."""

from __future__ import annotations

from datetime import date

from psycopg import sql
from rich.console import Console
from rich.progress import Progress

from core.postgres import connection, table_identifier
from core.settings import SourceTables, settings
from kfs.console import UsageError
from source.ddl import create_source_tables, drop_source_tables, next_session_id
from source.pg_server import source_dsn
from source.simulator import SimulationConfig, simulate


def source_market_count(conn, tables: SourceTables) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_identifier(tables.markets))).fetchone()[0]


def run_simulation(markets: int, days: int, seed: int, signal: float, start: date | None, replace: bool,
                   console: Console, **options):
    """Simulate a universe into the source tables (the embedded server unless KFS_PG_DSN is set)."""
    kwargs = dict(markets=markets, days=days, seed=seed, signal=signal, **options)
    if start is not None:
        kwargs["start"] = start
    config = SimulationConfig(**kwargs)
    tables = settings().tables
    with connection(source_dsn()) as conn:
        if replace:
            drop_source_tables(conn, tables)
        create_source_tables(conn, tables)
        if source_market_count(conn, tables) and not replace:
            raise UsageError("the source tables already hold markets; pass --replace to start from empty tables")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"simulating {config.markets} markets x {config.days} days", total=config.markets)
            summary = simulate(conn, tables, config, next_session_id(conn, tables),
                               progress=lambda n: progress.advance(task, n))
    return config, summary
