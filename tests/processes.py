"""Process helpers for the tests that kill commands: a process's descendants and command line, from /proc."""

from __future__ import annotations

from pathlib import Path

from kfs.interrupts import child_pids


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        children = [c for p in frontier for c in child_pids(p)]
        found += children
        frontier = children
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
