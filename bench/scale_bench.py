"""Scale: the default universe (1x: 300 markets x 7 days) and 4x (1,200 markets x 7 days) end to end, per
stage: seconds and peak resident memory, and the 4x/1x ratios; then partition fan-out, a 7-day backfill
on Dagster's multiprocess executor with 2 workers against 1.

The training-cache build (the load stage) is disk-bound: it writes every event's arrays and waits for them
to reach the disk, and this machine's disk takes writes at anything from about 290 to 960 MB/s from one
minute to the next. So after both universes have run, the build is repeated `LOAD_ROUNDS` more times at
each scale, the two scales alternating (cache removed first), and the stage's seconds are the median of its
runs: the ratio then compares the scales on the same disk, not on whatever the disk did in two moments
half an hour apart.

Each stage is its own `kfs` (or Python) process in a universe of its own (schema, lake, home), so its peak
RSS is that process's (and the largest of the processes it waited for: dbt), read from `wait4`. Peak RSS
counts the pages of memory-mapped files it held (the training arrays: page cache, given back past
`KFS_MAPPED_MIB`, training/data/mapped_pages.py), so the peak of anonymous memory (sampled) is reported too: what
the process cannot give back at all.
Training runs on a fixed time budget, so its seconds say nothing about scale; its memory does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from statistics import median

import psycopg
from psycopg import sql

from bench.results_io import Result, print_results, write_results
from kfs.universe import drop_schema, schema_tables
from source.pg_server import source_dsn

REPO = Path(__file__).resolve().parent.parent
START = date(2026, 3, 2)
DAYS = 7
BASE_MARKETS = 300
TRAIN_SECONDS = 60
LOAD_ROUNDS = 2   # repeats of the cache build per scale, alternating scales, after the universes' stages
STAGES = ("simulate", "ingest", "features", "load_training_data", "train_validate_publish")
LOAD_COMMAND = [sys.executable, "-c",
                "import time; from training.data.cache import load_market_data; t = time.perf_counter(); "
                "data = load_market_data(); print(sum(len(m.time_ms) for m in data.markets.values()), "
                "time.perf_counter() - t)"]


# Runs a command and reports (seconds, peak RSS KiB, peak anonymous KiB). Peak RSS is the kernel's
# ru_maxrss of the reaped child (it includes the children it reaped, and file pages it mapped: page cache);
# peak anonymous memory (RssAnon: heap, stacks, private copies; what cannot be dropped and re-read) is
# sampled every 20 ms over the child and its descendants, so a spike shorter than that can be missed.
# The seconds end when what the command wrote is on disk (a sync after it): otherwise a stage's files still
# being written back slow the next stage's disk (the 4x feature stage leaves gigabytes dirty, and the cache
# build after it is disk-bound), and each stage is charged for the writes of the one before.
# The machine's memory around the stage (from /proc, system-wide: Linux only): memory available when it
# starts, and over its run the bytes read from and written to disk and the page cache the kernel reclaimed
# (pages stolen from the file and anonymous lists), which say whether a stage met a full page cache.
_PEAK_WRAPPER = r"""
import os, resource, subprocess, sys, time

def memory_counters():
    try:
        with open("/proc/vmstat") as vmstat:
            counters = dict(line.split() for line in vmstat)
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return (0, 0, 0, 0)
    stolen = sum(int(value) for key, value in counters.items() if key.startswith("pgsteal_"))
    return (available, int(counters.get("pgpgin", 0)), stolen * os.sysconf("SC_PAGE_SIZE") // 1024,
            int(counters.get("pgpgout", 0)))

def anonymous_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            kib = next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)
        children = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(c) for c in handle.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return kib + sum(anonymous_kib(child) for child in children)

before = memory_counters()
t = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
peak_anonymous = 0
while child.poll() is None:
    peak_anonymous = max(peak_anonymous, anonymous_kib(child.pid))
    time.sleep(0.02)
os.sync()
print(f"KFS_SCALE {time.perf_counter() - t} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {peak_anonymous}",
      file=sys.stderr)
after = memory_counters()
print(f"KFS_SCALE_MEMORY {before[0]} {after[1] - before[1]} {after[2] - before[2]} {after[3] - before[3]}",
      file=sys.stderr)
sys.exit(child.returncode)
"""


def run_with_peak(command: list[str], env: dict) -> tuple[float, float, float, str, tuple[float, ...]]:
    """(seconds, peak RSS MiB, peak anonymous MiB, stdout, memory) of the command, memory being MiB available
    when it started, MiB read from disk, MiB of pages reclaimed and MiB written to disk while it ran (see
    _PEAK_WRAPPER)."""
    process = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *command], env=env, cwd=REPO, capture_output=True,
                             text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({process.returncode}): {process.stderr.strip()[-800:]}")
    line = [ln for ln in process.stderr.splitlines() if ln.startswith("KFS_SCALE ")][-1]
    _, seconds, peak_kib, anonymous_kib = line.split()
    memory = [ln for ln in process.stderr.splitlines() if ln.startswith("KFS_SCALE_MEMORY ")][-1].split()[1:]
    return (float(seconds), float(peak_kib) / 1024, float(anonymous_kib) / 1024, process.stdout,
            tuple(float(kib) / 1024 for kib in memory))


def universe_env(schema: str, root: Path, **extra: str) -> dict:
    tables = schema_tables(schema)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KFS_", "DAGSTER_"))}
    env.update(KFS_PG_DSN=source_dsn(), KFS_LAKE=str(root / "lake"), KFS_HOME=str(root / "home"),
               KFS_TABLE_SNAPSHOTS=tables.snapshots, KFS_TABLE_DELTAS=tables.deltas, KFS_TABLE_TRADES=tables.trades,
               KFS_TABLE_MARKETS=tables.markets, KFS_TRAIN_SECONDS=str(TRAIN_SECONDS), **extra)
    return env


def schema_of(scale: int) -> str:
    """The source schema of the universe of that scale."""
    return f"bench_scale_{scale}x"


def load_output(out: str) -> tuple[float, float]:
    """(events, seconds of the build inside the process) that `LOAD_COMMAND` printed."""
    events, build_seconds = out.split()
    return float(events), float(build_seconds)


def kfs(*args: str) -> list[str]:
    return [sys.executable, "-m", "kfs.cli", *args]


def measure_universe(scale: int, root: Path, base_markets: int = BASE_MARKETS) -> dict[str, tuple[float, ...]]:
    """Stage -> (seconds, peak RSS MiB, peak anonymous MiB) for `scale` x `base_markets` markets over 7 days,
    in a universe under `root` (its lake is left there for `measure_load_rounds`; its source tables are not)."""
    schema = schema_of(scale)
    dsn = source_dsn()
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    env = universe_env(schema, root)
    last = (START + timedelta(days=DAYS - 1)).isoformat()
    commands = {
        "simulate": kfs("simulate", "--markets", str(base_markets * scale), "--days", str(DAYS), "--seed", "7",
                        "--start", START.isoformat(), "--replace"),
        "ingest": kfs("materialize", "--only", "ingest", "--start", START.isoformat(), "--end", last),
        "features": kfs("materialize", "--only", "features", "--start", START.isoformat(), "--end", last),
        "load_training_data": LOAD_COMMAND,
        "train_validate_publish": kfs("train"),
    }
    measured = {}
    try:
        for stage in STAGES:
            seconds, peak, anonymous, out, memory = run_with_peak(commands[stage], env)
            measured[stage] = (seconds, peak, anonymous)
            measured[f"{stage}_memory"] = memory
            print(f"  {scale}x {stage}: {seconds:.1f} s, peak RSS {peak:,.0f} MiB, anonymous {anonymous:,.0f} MiB; "
                  f"memory available at start {memory[0]:,.0f} MiB, read {memory[1]:,.0f} MiB, "
                  f"reclaimed {memory[2]:,.0f} MiB, written {memory[3]:,.0f} MiB", flush=True)
            if stage == "load_training_data":
                events, build_seconds = load_output(out)
                measured["events"] = (events, 0.0, 0.0)
                measured["load_training_data_in_process"] = (build_seconds, 0.0, 0.0)
        if scale == 1:
            measured.update(measure_fan_out(schema, root))
    finally:
        drop_schema(dsn, schema)
    return measured


def measure_load_rounds(universes: dict[int, Path], rounds: int) -> dict[int, list[tuple[float, ...]]]:
    """Scale -> (seconds, peak RSS MiB, peak anonymous MiB, in-process seconds) of `rounds` more cache builds
    per universe, the scales alternating within each round, each build from scratch (the cache removed)."""
    runs: dict[int, list[tuple[float, ...]]] = {scale: [] for scale in universes}
    for round_number in range(rounds):
        for scale, root in universes.items():
            shutil.rmtree(root / "home" / "cache" / "training_arrays", ignore_errors=True)
            seconds, peak, anonymous, out, _ = run_with_peak(LOAD_COMMAND, universe_env(schema_of(scale), root))
            _, build_seconds = load_output(out)
            runs[scale].append((seconds, peak, anonymous, build_seconds))
            print(f"  {scale}x cache build, round {round_number + 2}: {seconds:.1f} s "
                  f"(the build {build_seconds:.1f} s)", flush=True)
    return runs


def measure_fan_out(schema: str, root: Path) -> dict[str, tuple[float, ...]]:
    """A 7-day backfill (ingest and features) on the multiprocess executor, 1 worker against 2."""
    last = (START + timedelta(days=DAYS - 1)).isoformat()
    measured = {}
    for workers in (1, 2):
        lake_root = root / f"fan_out_{workers}"
        env = universe_env(schema, lake_root, KFS_EXECUTOR="multiprocess", KFS_WORKERS=str(workers))
        seconds, peak, anonymous, _, _ = run_with_peak(kfs("materialize", "--start", START.isoformat(), "--end", last),
                                                       env)
        measured[f"backfill_7_days_{workers}_workers"] = (seconds, peak, anonymous)
        print(f"  fan-out, {workers} worker(s): {seconds:.1f} s", flush=True)
        shutil.rmtree(lake_root, ignore_errors=True)
    return measured


def main() -> list[Result]:
    roots = {scale: Path(tempfile.mkdtemp(prefix=f"kfs-scale-{scale}x-")) for scale in (1, 4)}
    try:
        one, four = (measure_universe(scale, root) for scale, root in roots.items())
        load_rounds = measure_load_rounds(roots, LOAD_ROUNDS)
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    for measured, scale in ((one, 1), (four, 4)):
        merge_load_rounds(measured, load_rounds[scale])
    results = [Result("events_4x_over_1x", four["events"][0] / one["events"][0], "x", target="about 4")]
    for stage in STAGES:
        results += stage_results(stage, one, four)
    (t1, *_), (t2, *_) = one["backfill_7_days_1_workers"], one["backfill_7_days_2_workers"]
    results.append(Result("backfill_7_days_2_workers_seconds", t2, "s", "backfill_7_days_1_worker_seconds", t1,
                          t1 / t2, "> 1 (speed-up)"))
    write_results("scale.json", results)
    print_results("scale (1x = 300 markets x 7 days; 4x = 1,200 markets x 7 days)", results)
    return results


def merge_load_rounds(measured: dict[str, tuple[float, ...]], rounds: list[tuple[float, ...]]) -> None:
    """The load stage's figures over all its builds: median seconds (and their least and most), the largest
    peaks."""
    first = (*measured["load_training_data"], measured["load_training_data_in_process"][0])
    runs = [first, *rounds]
    seconds, build_seconds = [run[0] for run in runs], [run[3] for run in runs]
    measured["load_training_data"] = (median(seconds), max(run[1] for run in runs), max(run[2] for run in runs))
    measured["load_training_data_in_process"] = (median(build_seconds), 0.0, 0.0)
    measured["load_training_data_range"] = (min(seconds), max(seconds), float(len(runs)))
    measured["load_training_data_in_process_range"] = (min(build_seconds), max(build_seconds), float(len(runs)))


def stage_results(stage: str, one: dict, four: dict) -> list[Result]:
    """A stage's seconds, peak RSS and peak anonymous memory at 4x against 1x, and the memory around it."""
    (s1, m1, a1), (s4, m4, a4) = one[stage], four[stage]
    timed = stage != "train_validate_publish"
    results = [Result(f"{stage}_seconds_4x", s4, "s", f"{stage}_seconds_1x", s1, s4 / s1,
                      "<= 4.4" if timed and stage != "simulate" else "fixed budget" if not timed else None)]
    bounded = stage in ("features", "load_training_data", "train_validate_publish")
    results.append(Result(f"{stage}_peak_rss_mib_4x", m4, "MiB", f"{stage}_peak_rss_mib_1x", m1, m4 / m1,
                          "<= 1.3" if bounded else None))
    results.append(Result(f"{stage}_peak_anonymous_mib_4x", a4, "MiB", f"{stage}_peak_anonymous_mib_1x", a1,
                          a4 / a1 if a1 else None, "<= 1.3" if bounded else None))
    if stage == "load_training_data":   # the build alone (without starting Python and importing), and the spread
        (b1, *_), (b4, *_) = one[f"{stage}_in_process"], four[f"{stage}_in_process"]
        results.append(Result(f"{stage}_in_process_seconds_4x", b4, "s", f"{stage}_in_process_seconds_1x", b1, b4 / b1))
        for key in (stage, f"{stage}_in_process"):
            (low1, high1, runs), (low4, high4, _) = one[f"{key}_range"], four[f"{key}_range"]
            results.append(Result(f"{key}_seconds_4x_least_of_{runs:.0f}", low4, "s", f"{key}_seconds_1x_least", low1))
            results.append(Result(f"{key}_seconds_4x_most_of_{runs:.0f}", high4, "s", f"{key}_seconds_1x_most", high1))
    for label, one_value, four_value in zip(("memory_available_at_start", "read_from_disk", "reclaimed",
                                             "written_to_disk"), one[f"{stage}_memory"], four[f"{stage}_memory"]):
        results.append(Result(f"{stage}_{label}_mib_4x", four_value, "MiB", f"{stage}_{label}_mib_1x", one_value))
    return results


if __name__ == "__main__":
    main()
