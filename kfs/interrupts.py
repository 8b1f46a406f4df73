"""How `kfs` owns its process's signals: SIGTERM stops a run like Ctrl-C, an interrupt always ends the process
(with status 130 and one line), and nothing an interrupt leaves behind (a traceback from a finalizer, a
library's log record, multiprocessing's resource tracker) reaches the terminal.

Dagster replaces our handlers while a run executes and turns SIGINT/SIGTERM into an exception raised wherever
the step happens to be: raised inside a finalizer it is lost, and a run waiting for a pool slot does not check
for it at all. So every handler also sets `INTERRUPTED` (long loops check it between steps), and a watchdog
thread hears every signal through the wakeup fd: if the process is still alive `INTERRUPT_GRACE_S` after one
(or at once on a second), its child processes are stopped and it exits 130. A run it abandons this way is
reclaimed by the next `kfs materialize` (orchestration/recovery.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing import resource_tracker
from pathlib import Path

# Set at the first SIGINT/SIGTERM; long loops check it between steps, so an interrupt that Dagster swallowed
# inside a step still stops the run.
INTERRUPTED = threading.Event()


def own_signals() -> None:
    """Everything `kfs` does to its process's signals when it runs as the program."""
    _remember_interrupts_in_every_handler()
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    _watch_interrupts()
    sys.unraisablehook = _quiet_lost_interrupts
    _drop_logged_interrupts()
    _start_resource_tracker_quietly()


def exit_interrupted_cleanly() -> None:
    """Leave with 130 after a handled interrupt. After an interrupt escaped code that a library ran through
    PyRun_String, CPython remembers an "unhandled KeyboardInterrupt" and ends the process by SIGINT at shutdown
    although we handled it (seen under load: status -2, not 130): run the exit handlers ourselves, then leave."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def stop_if_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def is_interrupt(error: BaseException | None) -> bool:
    return isinstance(error, KeyboardInterrupt) or type(error).__name__ == "DagsterExecutionInterruptedError"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _remember_interrupts_in_every_handler() -> None:
    """Whatever handler SIGINT/SIGTERM has when the signal comes (ours, or Dagster's, which only records it in
    some sections and forgets it when they end), it first sets INTERRUPTED, so a run whose interrupt was
    swallowed (by a handler, or as an exception by a library's bare `except:`) still ends with 130. Once a
    signal was lost with exit 0 although the wakeup fd of `_watch_interrupts` should have heard it: this is
    a second path that does not depend on it. `signal.getsignal` keeps answering the handler that was set."""
    if getattr(signal.signal, "kfs_remembers", False):
        return
    install, lookup = signal.signal, signal.getsignal
    stops = {signal.SIGINT, signal.SIGTERM}

    def remembering(handler):
        if not callable(handler) or getattr(handler, "kfs_wraps", None) is not None:
            return handler        # SIG_IGN and SIG_DFL are the kernel's; the wakeup fd still hears SIG_IGN-free ones

        def remember(signum, frame):
            INTERRUPTED.set()
            return handler(signum, frame)

        remember.kfs_wraps = handler
        return remember

    def signal_(signum, handler):
        previous = install(signum, remembering(handler) if signum in stops else handler)
        return getattr(previous, "kfs_wraps", previous)

    def getsignal(signum):
        current = lookup(signum)
        return getattr(current, "kfs_wraps", current)

    signal_.kfs_remembers = True
    signal.signal, signal.getsignal = signal_, getsignal


def _start_resource_tracker_quietly() -> None:
    """multiprocessing's resource tracker (started by the first library that makes a lock) outlives an
    interrupted run and reports, on the terminal it inherited, the semaphores it then cleans up (a traceback
    after `kfs: interrupted`). Start it now with its stderr on /dev/null: its reports are not the user's."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _drop_logged_interrupts() -> None:
    """A library that logs the interrupt it was cut by (SQLAlchemy closing a pooled connection) prints a
    traceback: drop such records, whatever logger they come from, so an interrupt stays one line."""
    def not_an_interrupt(record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_interrupt(record.exc_info[1]))

    for handler in (logging.lastResort, *logging.getLogger().handlers):
        if handler is not None:
            handler.addFilter(not_an_interrupt)


def _quiet_lost_interrupts(unraisable) -> None:
    """An interrupt raised inside a finalizer (Dagster's handler raises wherever the signal lands) cannot
    propagate: Python would print it as `Exception ignored in ...` with a traceback. Remember it instead (the
    run still ends with 130) and leave every other unraisable error to Python's own report."""
    if is_interrupt(unraisable.exc_value):
        INTERRUPTED.set()
        return
    sys.__unraisablehook__(unraisable)


INTERRUPT_GRACE_S = 20.0
_WAKEUP_SOCKETS: list = []
_TERMINAL_STDERR: list[int] = []  # a duplicate of the stderr the process started with (see _exit_interrupted)


def _watch_interrupts() -> None:
    """Make sure an interrupt ends the process (see the module docstring): the wakeup fd hears every signal
    whatever handler Python runs."""
    if threading.current_thread() is not threading.main_thread():
        return
    _TERMINAL_STDERR[:] = [os.dup(2)]
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    _WAKEUP_SOCKETS[:] = [reader, writer]  # the signal machinery keeps only the descriptor: keep the objects
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    stops = {signal.SIGINT, signal.SIGTERM}

    def watch() -> None:
        first = None
        while True:
            reader.settimeout(None if first is None else max(first + INTERRUPT_GRACE_S - time.monotonic(), 0.01))
            try:
                received = [s for s in reader.recv(64) if s in stops]
            except TimeoutError:
                _exit_interrupted()
            if received and first is not None:
                _exit_interrupted()
            if received:
                first = time.monotonic()
                INTERRUPTED.set()

    threading.Thread(target=watch, name="kfs-interrupt-watchdog", daemon=True).start()


def _exit_interrupted() -> None:
    stop_child_processes()
    # Written to the stderr this process started with, not to sys.stderr: while a step runs, Dagster's
    # compute-log capture has redirected descriptor 2 into its log (through a child it mirrors with), and a
    # line printed there is lost when we leave at once (CI saw exit 130 with an empty stderr).
    os.write(_TERMINAL_STDERR[0] if _TERMINAL_STDERR else 2, b"kfs: interrupted\n")
    os._exit(130)


def child_pids(pid: int | None = None) -> list[int]:
    """Processes whose parent is `pid` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def stop_child_processes(grace_s: float = 5.0) -> None:
    """SIGTERM every child process (dbt, a benchmark), SIGKILL what is left after `grace_s`. The embedded
    PostgreSQL is not a child: pg_ctl detaches it."""
    children = child_pids()
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in children):
        time.sleep(0.1)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """In a child process: receive `signum` when the process that started it dies, however it dies. A `kfs`
    killed with SIGKILL cannot stop its children, and a run process in the middle of a run would otherwise go
    on (or wait on a dask scheduler that died with it) for minutes. Linux only; elsewhere a no-op. SIGTERM,
    not SIGKILL: the run's own handlers end it as an interrupt."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        return  # not permitted here: the child lives as it did before
    if os.getppid() != parent_pid:  # the parent died before the request: nobody will send the signal
        os.kill(os.getpid(), signum)
