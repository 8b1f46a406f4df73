"""A PostgreSQL that goes away for a moment (killed and restarted) costs a retry, not the run: the connect
and the read are both retried, through a real TCP hop in front of the real server that drops every
connection and refuses new ones for 0.3 s."""

from __future__ import annotations

import socket
import threading
import time
from datetime import date

import psycopg
from psycopg import conninfo

from core.catalog import Lake
from core.postgres import connect
from ingest.extract import day_bounds_ms, ingest_partition

DAY = date(2026, 4, 9)


class FlakyHop:
    """A TCP forwarder on a local port to `target`; `outage(seconds)` closes every connection and the listening
    socket, and listens again on the same port after `seconds`, as a restarted server does."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listen()

    def _listen(self) -> None:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(16)
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def outage(self, seconds: float) -> None:
        try:
            self._server.shutdown(socket.SHUT_RDWR)   # wakes the blocked accept(), which then lets the port go
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._sockets.clear()
        time.sleep(seconds)
        self._listen()


def test_an_ingest_survives_a_server_gone_for_a_moment(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables()
    t0 = day_bounds_ms(DAY)[0] + 1000
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"INSERT INTO {tables.trades} (market_ticker, yes_price, no_price, count, taker_side, ts, received_at) "
                     f"VALUES ('KXA', 40, 60, 3, 'yes', {t0}, {t0})")
    parts = conninfo.conninfo_to_dict(pg_dsn)
    hop = FlakyHop((parts.get("host", "127.0.0.1"), int(parts["port"])))
    via_hop = conninfo.make_conninfo(pg_dsn, host="127.0.0.1", port=str(hop.port))
    lake = Lake(tmp_path)
    assert ingest_partition(via_hop, "trades", DAY, lake, tables).rows_written == 1   # the cached connection opens
    for attempt in range(2):
        outage = threading.Thread(target=hop.outage, args=(0.3,))
        outage.start()
        time.sleep(0.05)
        if attempt == 0:
            report = ingest_partition(via_hop, "trades", DAY, lake, tables)   # the cached connection is dead
            assert report.reconciled and report.rows_written == 1
        else:
            with connect(via_hop) as conn:                                    # refused at first, then back
                assert conn.execute("SELECT 1").fetchone() == (1,)
        outage.join()
