"""The lake catalog: the one module that knows where every dataset lives and how it is laid out.

Readers and writers ask a `Lake` for a dataset's location and do their I/O through it; the dbt sources
and external models get their locations from `DATASETS` (rendered into dbt by
`orchestration.dbt_contract`). No other module builds a lake path.

Layout (DESIGN.md section 2):

    raw/<stream>/date=YYYY-MM-DD/part-00000.parquet          clean rows of snapshots, deltas, trades
    raw/_quarantine/<stream>/date=YYYY-MM-DD/part-00000.parquet   rejected rows with a reason
    raw/_quarantine/invalid_timestamp/<stream>.parquet       rows whose time belongs to no partition
    raw/markets/markets.parquet, raw/_quarantine/markets/markets.parquet
    features/events/date=YYYY-MM-DD/part-00000.parquet        one row per book event (dbt source)
    features/resolution_history/resolution_history.parquet    settled markets (Python, read by dbt)
    features/int_market_day_trades/trade_date=.../            dbt
    features/market_categories/market_categories.parquet      dbt hand-off to the split
    features/markets/markets.parquet                          dbt mart
    splits/registry.parquet                                    the frozen split registry
    models/registry.json, models/<version>/..., models/candidates/latest/...

Writes are atomic (a temporary name in the same folder, fsync, rename; one PUT on object storage) and
deterministic (same table, same bytes), so re-running a partition replaces it with identical content.

Every parquet file written through a `Lake` gets a checksum manifest beside it (`<file>.manifest.json`:
sha256, size, rows), written after the file. Readers of the raw lake and the feature store verify it
(`verified_partition_files`): a flipped byte, a truncated or replaced file, a file without its manifest or a
day missing inside a read range is an error naming the file (or the days) and the command that rewrites it.
A writer killed between the file and its manifest leaves a mismatch, which reads as damage: the rerun
rewrites both. The dbt-written datasets have no manifests (DuckDB writes them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from core.object_store import polars_storage_options

PART_FILE = "part-00000.parquet"
MANIFEST_SUFFIX = ".manifest.json"
_TMP_MARK = ".tmp-"
_HASH_CHUNK = 1 << 20
# Polars' writer: about 3x faster than pyarrow's here and 30% smaller files at the same zstd level.
_PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, row_group_size=256 * 1024, statistics=True)
RAW_STREAMS = ("snapshots", "deltas", "trades")


@dataclass(frozen=True)
class Dataset:
    """A dataset's place in the lake: `relative` is its file (or, for daily datasets, its folder)."""

    name: str
    relative: str
    daily: bool = False          # Hive partitions date=YYYY-MM-DD/part-00000.parquet under `relative`
    doc: str = ""

    def glob(self) -> str:
        """The files of the dataset, as a glob relative to the lake root (for DuckDB and dbt)."""
        return f"{self.relative}/date=*/*.parquet" if self.daily else self.relative


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    *(Dataset(f"raw_{s}", f"raw/{s}", daily=True, doc=f"clean {s} rows, one UTC day per partition") for s in RAW_STREAMS),
    *(Dataset(f"quarantine_{s}", f"raw/_quarantine/{s}", daily=True, doc=f"rejected {s} rows with a reason")
      for s in RAW_STREAMS),
    Dataset("raw_markets", "raw/markets/markets.parquet", doc="market metadata and resolutions"),
    Dataset("quarantine_markets", "raw/_quarantine/markets/markets.parquet", doc="rejected market rows"),
    Dataset("features_events", "features/events", daily=True, doc="one row per book event: book + model features"),
    Dataset("resolution_history", "features/resolution_history/resolution_history.parquet",
            doc="settled markets: outcome, last price before close, Brier contribution"),
    Dataset("int_market_day_trades", "features/int_market_day_trades", doc="dbt: daily trade aggregates per market"),
    Dataset("market_categories", "features/market_categories/market_categories.parquet",
            doc="dbt hand-off: volatility and volatility class per market"),
    Dataset("markets_mart", "features/markets/markets.parquet", doc="dbt mart: one row per market"),
    Dataset("split_registry", "splits/registry.parquet", doc="the frozen market-level split"),
)}
_INVALID_TIMESTAMP = "raw/_quarantine/invalid_timestamp"


class DamagedLakeFile(Exception):
    """A lake file that does not match its checksum manifest, has none, or a day missing from a range."""
_MODELS = "models"


class Lake:
    """A lake root and the locations of its datasets: a local folder, or `s3://bucket/prefix` (locations are
    then `UPath`s, and every read and write goes through s3fs or Polars' object store; core/object_store.py)."""

    def __init__(self, root: Path | str | None = None):
        if root is None:
            from core.settings import settings

            root = settings().lake
        root = str(root)
        self.remote = root.startswith("s3://")
        if self.remote:
            from upath import UPath

            self.root = UPath(root.rstrip("/"), use_listings_cache=False, skip_instance_cache=True)
            self.fs = self.root.fs
        elif "://" in root:
            raise ValueError(f"KFS_LAKE={root!r}: a lake is a local path or s3://bucket/prefix")
        else:
            self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    def check_reachable(self) -> None:
        """A one-line error now, instead of one per step later, when the bucket is missing or unreachable."""
        if not self.remote:
            return
        bucket = self.root.path.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False)
        except FileNotFoundError:
            raise ValueError(f"KFS_LAKE={self.root}: bucket {bucket!r} does not exist") from None
        except PermissionError:
            raise ValueError(f"KFS_LAKE={self.root}: access to bucket {bucket!r} denied (check "
                             "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)") from None
        except Exception as error:  # noqa: BLE001 - botocore's connection errors have no common base here
            raise ValueError(f"KFS_LAKE={self.root}: object storage unreachable at AWS_ENDPOINT_URL="
                             f"{_endpoint_for_messages()} ({type(error).__name__})") from None

    # -- locations -------------------------------------------------------------------------------
    def location(self, dataset: str) -> Path:
        return self.root / DATASETS[dataset].relative

    def partition(self, dataset: str, day: date | str) -> Path:
        assert DATASETS[dataset].daily, f"{dataset} is not partitioned by day"
        day = day if isinstance(day, str) else day.isoformat()
        return self.location(dataset) / f"date={day}" / PART_FILE

    def raw_partition(self, stream: str, day: date) -> Path:
        return self.partition(f"raw_{stream}", day)

    def quarantine_partition(self, stream: str, day: date) -> Path:
        return self.partition(f"quarantine_{stream}", day)

    def invalid_timestamp_quarantine(self, stream: str) -> Path:
        return self.root / _INVALID_TIMESTAMP / f"{stream}.parquet"

    def raw_markets(self) -> Path:
        return self.location("raw_markets")

    def quarantine_markets(self) -> Path:
        return self.location("quarantine_markets")

    def event_partition(self, day: date | str) -> Path:
        return self.partition("features_events", day)

    def partitions(self, dataset: str) -> list[date]:
        """Days with a written partition, oldest first (`dataset` may be a raw stream name)."""
        dataset = f"raw_{dataset}" if dataset in RAW_STREAMS else dataset
        folder = self.location(dataset)
        if self.remote:
            files = self.fs.glob(f"{folder.path}/date=*/{PART_FILE}")
            return sorted(date.fromisoformat(f.rsplit("/", 2)[1].split("=", 1)[1]) for f in files)
        if not folder.exists():
            return []
        return sorted(date.fromisoformat(p.name.split("=", 1)[1]) for p in folder.glob("date=*") if (p / PART_FILE).exists())

    def partition_files(self, dataset: str, start: date | None = None, end: date | None = None) -> list[Path]:
        """Written partition files of a daily dataset with days in [start, end] (None: unbounded)."""
        days = [d for d in self.partitions(dataset) if (start is None or d >= start) and (end is None or d <= end)]
        return [self.partition(dataset, d) for d in days]

    def verified_partition_files(self, dataset: str, start: date | None = None, end: date | None = None
                                 ) -> list[Path]:
        """`partition_files`, after checking that no day is missing between the first and last day found in
        [start, end] and that every file matches its checksum manifest (DamagedLakeFile otherwise)."""
        days = [d for d in self.partitions(dataset) if (start is None or d >= start) and (end is None or d <= end)]
        missing = _missing_days(days)
        if missing:
            shown = ", ".join(d.isoformat() for d in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DamagedLakeFile(f"{self.location(dataset)}: no partition for {shown} inside {days[0]} .. {days[-1]} "
                                  f"(deleted?); rebuild with `kfs materialize --start {missing[0]} --end {missing[-1]}`")
        files = [self.partition(dataset, d) for d in days]
        for file, day in zip(files, days):
            self.verify(file, fix=f"kfs materialize --start {day} --end {day}")
        return files

    def verify(self, path: Path, fix: str = "rerun the step that writes it") -> None:
        """Raise DamagedLakeFile unless `path` matches its checksum manifest (size and sha256; on object
        storage, which checks the bytes of every upload itself, size and row count from the footer).
        A file verified once is not hashed again while its size and modification time stay the same."""
        manifest_path = _manifest_path(path)
        try:
            state = self.fingerprint(path)
        except FileNotFoundError:
            raise DamagedLakeFile(f"{path} is missing; rewrite it with `{fix}`") from None
        if _VERIFIED.get(str(path)) == state:
            return
        if not self.exists(manifest_path):
            raise DamagedLakeFile(f"{path} has no checksum manifest ({manifest_path.name}); rewrite it with `{fix}`")
        try:
            manifest = self.read_json(manifest_path)
            expected_size, expected_sha, expected_rows = manifest["bytes"], manifest["sha256"], manifest["rows"]
        except (ValueError, KeyError, TypeError):
            raise DamagedLakeFile(f"{manifest_path} is not a checksum manifest; rewrite {path.name} with `{fix}`") from None
        size = self.size(path)
        if self.remote:
            actual_sha, rows = expected_sha, (self._footer_rows(path) if size == expected_size else None)
        else:
            actual_sha, rows = file_sha256(Path(path)), expected_rows
        if size != expected_size or actual_sha != expected_sha or rows != expected_rows:
            raise DamagedLakeFile(f"{path} does not match its checksum manifest (damaged or replaced: {size} bytes, "
                                  f"manifest {expected_size}); rewrite it with `{fix}`")
        _VERIFIED[str(path)] = state

    def _footer_rows(self, path: Path) -> int | None:
        try:
            return self.parquet_rows(path)
        except (OSError, ValueError, pa.ArrowException):
            return None

    def quarantine_files(self, stream: str) -> list[Path]:
        files = self.partition_files(f"quarantine_{stream}") if stream in RAW_STREAMS else []
        extra = self.quarantine_markets() if stream == "markets" else self.invalid_timestamp_quarantine(stream)
        return files + ([extra] if extra.exists() else [])

    def model_root(self) -> Path:
        return self.root / _MODELS

    def model_registry(self) -> Path:
        return self.model_root() / "registry.json"

    def model_version(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"bad model version name {version!r}")
        return self.model_root() / version

    def candidate(self) -> Path:
        return self.model_root() / "candidates" / "latest"

    def training_lock(self) -> Path:
        """The lock one training run per lake holds: beside the models on a local lake (shared by every checkout
        that uses it); for a bucket, which has no locks, on this machine (one run per machine and lake)."""
        if self.remote:
            return self.local_cache("locks") / "training.lock"
        return self.model_root() / ".training.lock"

    def local_cache(self, kind: str) -> Path:
        """Local folder for data derived from this lake or copied out of it (`kind`: training_arrays, for
        training/data/market_data.py; lake_files, for `local_copy`): under `$KFS_CACHE`, one folder per lake, since
        memory maps and TorchScript need local files even when the lake is a bucket."""
        from core.settings import settings

        lake_id = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return settings().cache / kind / lake_id

    def fingerprint(self, path: Path) -> str:
        """Size and modification time of a file: what changes when it is rewritten (keys derived caches)."""
        if self.remote:
            info = self.fs.info(path.path)
            return f"{info['size']}:{info.get('ETag') or info.get('LastModified')}"
        stat = Path(path).stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def dbt_output_folders(self) -> list[Path]:
        """Folders dbt's external models write into (DuckDB's COPY does not create them; object storage has
        no folders to create)."""
        if self.remote:
            return []
        return [self.location(name) if not Path(DATASETS[name].relative).suffix else self.location(name).parent
                for name in ("int_market_day_trades", "market_categories", "markets_mart")]

    # -- I/O -------------------------------------------------------------------------------------
    def remove_dataset(self, dataset: str) -> None:
        """Delete every file of a dataset that is rebuilt whole (a writer of Hive partitions that only adds
        and replaces files would otherwise keep partitions the new build no longer has)."""
        location = self.location(dataset)
        if self.remote:
            if self.fs.exists(location.path):
                self.fs.rm(location.path, recursive=True)
        else:
            import shutil

            shutil.rmtree(location, ignore_errors=True)
            location.mkdir(parents=True, exist_ok=True)

    def exists(self, path: Path) -> bool:
        return self.fs.exists(path.path) if self.remote else Path(path).exists()

    def read_parquet(self, path: Path, columns: list[str] | None = None) -> pl.DataFrame:
        if self.remote:
            return pl.read_parquet(str(path), columns=columns, storage_options=polars_storage_options())
        return pl.read_parquet(path, columns=columns)

    def scan_parquet(self, paths: Iterable[Path]) -> pl.LazyFrame:
        if self.remote:
            return pl.scan_parquet([str(p) for p in paths], storage_options=polars_storage_options())
        return pl.scan_parquet([str(p) for p in paths])

    def parquet_batches(self, path: Path, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The rows of a parquet file a record batch at a time (on object storage through ranged reads)."""
        if not self.remote:
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)
            return
        with self.fs.open(path.path, "rb") as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size)

    def parquet_rows(self, path: Path) -> int:
        if self.remote:
            with self.fs.open(path.path, "rb") as handle:  # the footer only: a ranged read
                return pq.ParquetFile(handle).metadata.num_rows
        return pq.ParquetFile(path).metadata.num_rows

    def size(self, path: Path) -> int:
        return self.fs.size(path.path) if self.remote else Path(path).stat().st_size

    def write_parquet(self, table: pl.DataFrame | pa.Table, path: Path, metadata: dict[str, str] | None = None) -> int:
        """The table as one parquet file, then its checksum manifest."""
        if self.remote:
            payload = parquet_bytes(table, metadata)
            size = self._put(path, payload)
            self._write_manifest(path, hashlib.sha256(payload).hexdigest(), size, _row_count(table))
            return size
        size = write_parquet_atomic(table, path, metadata)
        self._write_manifest(path, file_sha256(Path(path)), size, _row_count(table))
        return size

    def write_parquet_frames(self, frames: Iterable[pl.DataFrame], path: Path,
                             metadata: dict[str, str] | None = None) -> int:
        """Frames of one schema written one after another into one parquet file, as atomically as
        `write_parquet`, holding one frame at a time (a day computed in batches of markets)."""
        if not self.remote:
            size = _write_atomic(path, lambda tmp: write_parquet_frames(frames, tmp, metadata))
            self._write_manifest(path, file_sha256(Path(path)), size, pq.ParquetFile(path).metadata.num_rows)
            return size
        with tempfile.TemporaryDirectory(prefix="kfs-part-") as staging:
            local = Path(staging) / "part.parquet"
            size = write_parquet_frames(frames, local, metadata)
            self.fs.put_file(str(local), path.path)   # one PUT, or a multipart upload completed in one call
            self._write_manifest(path, file_sha256(local), size, pq.ParquetFile(local).metadata.num_rows)
            return size

    def _write_manifest(self, path: Path, sha256: str, size: int, rows: int) -> None:
        self.write_json(_manifest_path(path), {"file": Path(str(path)).name, "sha256": sha256, "bytes": size,
                                               "rows": rows})

    def read_json(self, path: Path) -> dict:
        if self.remote:
            return json.loads(self.fs.cat_file(path.path))
        return json.loads(Path(path).read_text())

    def write_json(self, path: Path, payload: dict) -> None:
        encoded = json_bytes(payload)
        if self.remote:
            self._put(path, encoded)
        else:
            write_bytes_atomic(path, encoded)

    def read_bytes(self, path: Path) -> bytes:
        return self.fs.cat_file(path.path) if self.remote else Path(path).read_bytes()

    def update_json(self, path: Path, change: Callable[[dict | None], dict], attempts: int = 20) -> dict:
        """Read-modify-write of a small JSON document that never loses a concurrent writer's change: `change`
        gets the current content (None if there is none) and returns the new one. Locally under an exclusive
        lock; on object storage with a conditional PUT (If-Match the ETag that was read, If-None-Match: * for
        a new object), read again and retried when another writer won."""
        if not self.remote:
            from core.locks import exclusive_file

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with exclusive_file(Path(path).with_name(f".{Path(path).name}.lock")):
                updated = change(self.read_json(path) if Path(path).exists() else None)
                self.write_json(path, updated)
                return updated
        bucket, key = path.path.split("/", 1)
        for _ in range(attempts):
            try:
                # The ETag first, then the content: if another writer comes between the two, the content is
                # newer than the ETag and the conditional PUT below fails, so nothing is lost either way.
                condition = {"IfMatch": self.fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]}
                updated = change(json.loads(self.fs.cat_file(path.path)))
            except FileNotFoundError:
                condition, updated = {"IfNoneMatch": "*"}, change(None)
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=json_bytes(updated), **condition)
                return updated
            except OSError as error:
                if "pre-condition" not in str(error) and "PreconditionFailed" not in str(error):
                    raise
        raise RuntimeError(f"{path}: {attempts} concurrent writers in a row won the race; giving up")

    @contextmanager
    def local_folder(self, folder: Path, last: tuple[str, ...] = ()) -> Iterator[Path]:
        """A local folder that stands for the lake's `folder` while a block writes files into it: the folder
        itself on a local lake; on object storage a temporary copy of what is there, uploaded file by file
        (one PUT each; the files named in `last` after the others, so a manifest appears after what it
        describes) when the block ends without error, and nothing uploaded when it fails."""
        if not self.remote:
            Path(folder).mkdir(parents=True, exist_ok=True)
            yield Path(folder)
            return
        with tempfile.TemporaryDirectory(prefix="kfs-stage-") as staging:
            local = Path(staging)
            if self.fs.exists(folder.path):
                self.fs.get(f"{folder.path}/", f"{local}/", recursive=True)
            downloaded = _file_states(local)
            yield local
            written = [p for p, state in _file_states(local).items() if downloaded.get(p) != state]
            for file in sorted(written, key=lambda p: (p.name in last, str(p))):
                self._put(folder / file.relative_to(local).as_posix(), file.read_bytes())

    def local_copy(self, folder: Path) -> Path:
        """The files of the lake's `folder` on local disk: the folder itself on a local lake; on object storage
        a copy under `$KFS_CACHE` (downloaded once; readers verify what they load, e.g. by checksums)."""
        if not self.remote:
            return Path(folder)
        target = self.local_cache("lake_files") / folder.path
        if not target.exists():
            partial = target.with_name(f"{target.name}{_TMP_MARK}{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            self.fs.get(f"{folder.path}/", f"{partial}/", recursive=True)
            if not any(partial.iterdir()):
                partial.rmdir()
                raise FileNotFoundError(f"{folder} holds no files")
            os.replace(partial, target)
        return target

    def _put(self, path, payload: bytes) -> int:
        """One PUT (a multipart upload for large objects, completed in one call): readers see the old object
        or the new one, never part of one; no temporaries to clean after a kill."""
        self.fs.pipe_file(path.path, payload)
        return len(payload)


_VERIFIED: dict[str, str] = {}   # path -> fingerprint of the state last verified, in this process


def _row_count(table: pl.DataFrame | pa.Table) -> int:
    return table.height if isinstance(table, pl.DataFrame) else table.num_rows


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def _missing_days(days: list[date]) -> list[date]:
    """Days absent between the first and the last of `days` (sorted)."""
    from datetime import timedelta

    if not days:
        return []
    present, missing, day = set(days), [], days[0]
    while day < days[-1]:
        if day not in present:
            missing.append(day)
        day += timedelta(days=1)
    return missing


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_states(folder: Path) -> dict[Path, tuple[int, int]]:
    """(size, modification time) of every file under `folder`: what tells a file written since apart."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def json_safe(value):
    """`value` with every non-finite float (NaN, an infinite threshold) as None: strict JSON has no such numbers,
    and a reader in another language would choke on Python's `NaN` and `Infinity`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def json_bytes(payload: dict) -> bytes:
    """The JSON every document of ours is written as: indented, strict (no NaN or Infinity: null instead)."""
    return (json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False) + "\n").encode()


def write_json_atomic(path: Path, payload: dict) -> int:
    return write_bytes_atomic(path, json_bytes(payload))


def _endpoint_for_messages() -> str:
    """AWS_ENDPOINT_URL without any user information it may carry."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return "(unset: AWS's own)"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def parquet_bytes(table: pl.DataFrame | pa.Table, metadata: dict[str, str] | None = None) -> bytes:
    """The same bytes `write_parquet_atomic` writes to a file."""
    import io

    frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, metadata=metadata, **_PARQUET_OPTIONS)
    return buffer.getvalue()


def write_parquet_atomic(table: pl.DataFrame | pa.Table, path: Path, metadata: dict[str, str] | None = None) -> int:
    """Write `table` to `path` so that readers see the old file or the new one, never a partial one.

    Returns the size of the new file in bytes.
    """
    frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    return _write_atomic(path, lambda tmp: frame.write_parquet(tmp, metadata=metadata, **_PARQUET_OPTIONS))


def write_parquet_frames(frames: Iterable[pl.DataFrame], path: Path, metadata: dict[str, str] | None = None) -> int:
    """Frames of one schema into one parquet file at `path` (not atomic: the callers write a temporary), in
    row groups of at most _PARQUET_OPTIONS' size; the first frame gives the schema, the others are cast to it."""
    writer = None
    try:
        for frame in frames:
            table = frame.to_arrow()
            if writer is None:
                schema = table.schema.with_metadata(metadata or {})
                writer = pq.ParquetWriter(path, schema, compression=_PARQUET_OPTIONS["compression"],
                                          compression_level=_PARQUET_OPTIONS["compression_level"],
                                          write_statistics=_PARQUET_OPTIONS["statistics"])
            writer.write_table(table.cast(schema), row_group_size=_PARQUET_OPTIONS["row_group_size"])
        if writer is None:
            raise ValueError(f"{path}: no frames to write")
    finally:
        if writer is not None:
            writer.close()
    return Path(path).stat().st_size


def write_bytes_atomic(path: Path, payload: bytes) -> int:
    return _write_atomic(path, lambda tmp: tmp.write_bytes(payload))


def _write_atomic(path: Path, write) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path.stat().st_size


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of writers that no longer exist (killed mid-write). A live writer's file is
    left alone: two runs may write the same partition at once, and the last rename wins with the same bytes."""
    for stale in path.parent.glob(f".{path.name}{_TMP_MARK}*"):
        writer_pid = stale.name.rsplit(_TMP_MARK, 1)[1].split("-", 1)[0]
        if writer_pid.isdigit() and process_alive(int(writer_pid)):
            continue
        stale.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """A folder's entries (names created, renamed or removed in it) on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
