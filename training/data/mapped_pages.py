"""Read-only maps of the training cache's column files, whose pages a process holds under a budget.

A page of a mapped file that a process has read stays in its resident memory (RssFile) until unmapped, so
training that samples rows over the whole history would end up holding the whole cache: memory that the
kernel can reclaim, but that schedulers and RSS limits (a Kubernetes pod's, `ru_maxrss`) count. A daemon
thread reads the process's resident file pages from /proc/self/statm every `CHECK_SECONDS`; when they have
grown by more than the budget (`KFS_MAPPED_MIB`) since it last looked below it, every live map gives its
pages back (madvise MADV_DONTNEED). The maps are shared and read-only, so nothing is lost: the next read
of a page finds it in the page cache (a minor fault) or reads it from the file again. Resident mapped pages
then stay under the budget plus what is read in one check interval. A forked child gets a trimmer of its
own (threads do not survive a fork; tested).
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from core.settings import settings

CHECK_SECONDS = 0.05
_PAGE = mmap.PAGESIZE
_maps: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()
_lock = threading.Lock()
_trimmer: threading.Thread | None = None
_budget_bytes = 0   # KFS_MAPPED_MIB as of the latest map (set before the trimmer starts)


def mapped_array(path: Path, dtype, width: int | None) -> np.ndarray:
    """A column file as a read-only array (rows x `width` when given), its pages read when touched and
    given back when the process holds more of them than the budget."""
    size = path.stat().st_size
    if size == 0:
        return np.zeros((0, width) if width else 0, dtype)
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    _register(mapping)
    array = np.frombuffer(mapping, dtype=dtype)
    return array.reshape(-1, width) if width else array


def resident_file_bytes() -> int:
    """Bytes of file-backed (and shared) pages resident in this process: /proc/self/statm's third field."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[2]) * _PAGE


def release_mapped_pages() -> None:
    """Every live map gives its resident pages back to the page cache (contents unchanged: read-only)."""
    with _lock:
        live = list(_maps)
    for mapping in live:
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except ValueError:   # closed since it was listed
            pass


def _register(mapping: mmap.mmap) -> None:
    global _budget_bytes
    with _lock:
        _maps.add(mapping)
        _budget_bytes = settings().mapped_mib << 20   # a running trimmer follows the latest setting
        _start_trimmer()


def _start_trimmer() -> None:
    global _trimmer
    if _trimmer is None or not _trimmer.is_alive():
        _trimmer = threading.Thread(target=_trim_while_mapped, name="kfs-mapped-pages", daemon=True)
        _trimmer.start()


def _trim_in_forked_child() -> None:
    """A forked child inherits the maps but not the thread (nor a lock held by a thread of the parent's, which
    would stay held): it gets a lock and a trimmer of its own."""
    global _lock
    _lock = threading.Lock()
    if _maps:
        _start_trimmer()


os.register_at_fork(after_in_child=_trim_in_forked_child)


def _trim_while_mapped() -> None:
    """Gives the maps' pages back whenever resident file pages grew by more than the budget over the floor:
    the lowest seen since the last release, or what stayed after it (shared libraries and other files count
    too, and stay). Ends when no map is left."""
    global _trimmer
    floor = resident_file_bytes()
    while True:
        time.sleep(CHECK_SECONDS)
        with _lock:
            if not _maps:
                _trimmer = None
                return
        resident = resident_file_bytes()
        if resident - floor > _budget_bytes:
            release_mapped_pages()
            floor = resident_file_bytes()
        else:
            floor = min(floor, resident)
