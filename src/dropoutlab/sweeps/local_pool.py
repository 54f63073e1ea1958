"""The local executor's worker processes: warm, long-lived, one job at a time each.

A sweep on one machine runs its jobs in ``workers`` processes that live for the whole sweep.
The driver talks to each over its own pipe, so it always knows which job each one runs:

* **Progress**: each finished epoch reaches the driver as ``("epoch", key, done, total)``.
* **A dead worker costs only its own run**: the run it held fails (and may be retried); a
  fresh worker takes its place.
* **Cheap start**: workers fork from a fork server that imported torch and numpy (and the
  sweep's heavy data libraries) before running any torch work, which makes the fork safe. The
  driver's environment at start (``DROPOUTLAB_*`` variables) and the thread count are sent to
  each worker, which then imports its task module. Without a fork server (Windows) workers
  are spawned.

Signals: workers have their own process group, so a terminal's Ctrl-C reaches only the driver,
which forwards one SIGINT to each busy worker so its task checkpoints and stops. Idle workers
ignore SIGINT, and every worker exits by itself when the driver's pipe closes, so an orphan
never writes a checkpoint another sweep resumes from.

Messages from a worker: ``("epoch", key, done, total)`` and ``("outcome", key, outcome)``; to a
worker: a :class:`~dropoutlab.sweeps.executors.WorkItem`, or ``None`` to exit.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import connection
from typing import Any

from dropoutlab.sweeps.execution import execute

__all__ = ["WorkerPool", "lost_outcome"]

log = logging.getLogger(__name__)

# Modules the fork server imports: heavy third-party libraries that start no torch work when
# imported. ``_SERVER_OPTIONAL`` ones are preloaded only when a sweep's jobs need them.
_SERVER_PRELOAD = ("numpy", "torch")
_SERVER_OPTIONAL = frozenset({"sklearn.datasets"})
_EXIT_GRACE_SECONDS = 5.0  # a soft shutdown waits this long for busy workers to finish
_IDLE_GRACE_SECONDS = 0.5  # ... and this long for an idle one to exit before killing it


def lost_outcome(status: str, message: str) -> dict[str, Any]:
    """An outcome for a job whose worker never reported (crashed, cancelled)."""
    return {"status": status, "metrics": {}, "history": [], "extras": {}, "error": message,
            "seconds": 0.0}


# ------------------------------------------------------------------------ worker process side
def _warm_up(threads: int, modules: Sequence[str]) -> None:
    """Import torch and ``modules`` now, so the first job does not pay for it.

    A module that fails to import is only logged: the job that needs it reports the error.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # the job itself will fail with the full message
            log.debug("warm-up import of %s failed: %s", name, err)


def _watch_driver(alive: Any) -> None:
    """Exit at once when the driver is gone (even killed): an orphan must stop writing.

    The driver never writes to ``alive``; it becomes readable (end of file) only when the
    driver's end closes, which the kernel does when the driver dies.
    """
    with contextlib.suppress(Exception):
        connection.wait([alive])
    os._exit(70)


def _adopt_environment(env: Mapping[str, str]) -> str | None:
    """Replace this process's environment by the driver's (as a spawned child would see it).

    Unpickling this worker's arguments imported the ``dropoutlab`` package under the fork
    server's environment, so the one setting it reads at import time, ``DROPOUTLAB_BACKEND``
    (:mod:`dropoutlab.backend`), is read again, and the allocator setting of
    :mod:`dropoutlab.allocator` is applied as the ``dropoutlab`` command applies it. Returns an
    error message when a setting is invalid (each job then fails with it), else ``None``.
    """
    os.environ.clear()
    os.environ.update(env)
    from dropoutlab import backend
    from dropoutlab.allocator import keep_freed_memory

    try:
        backend.set_backend(os.environ.get("DROPOUTLAB_BACKEND", "auto"))
    except ValueError as err:
        return f"environment variable DROPOUTLAB_BACKEND: {err}"
    try:
        keep_freed_memory()
    except ValueError as err:
        return str(err)
    return None


def _worker_main(conn: Any, alive: Any, stop: Any, threads: int, modules: Sequence[str],
                 env: Mapping[str, str]) -> None:
    """A worker's life: set up, warm up, then run the jobs the driver sends until ``None``."""
    with contextlib.suppress(OSError):  # not permitted on some platforms
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_driver, args=(alive,), name="dropoutlab-orphan-watch",
                     daemon=True).start()
    setup_error = _adopt_environment(env)  # before the task modules are imported
    _warm_up(threads, modules)
    from dropoutlab import train

    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the driver closed the pipe
            return
        if item is None:
            return

        def forward(done: int, total: int, key: str = item.key) -> None:
            with _sigint_held():  # a Ctrl-C mid-send would leave half a message in the pipe
                conn.send(("epoch", key, int(done), int(total)))

        if setup_error is not None:
            conn.send(("outcome", item.key, lost_outcome("failed", setup_error)))
            continue
        previous = train.set_epoch_listener(forward)
        try:
            outcome = _run_one(item, stop)
        finally:
            train.set_epoch_listener(previous)
        conn.send(("outcome", item.key, outcome))


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back (delivered right after) where the platform allows it."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _run_one(item: Any, stop: Any) -> dict[str, Any]:
    """Run one job with SIGINT armed (train() swaps in its own handler, which checkpoints)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if stop.is_set():  # a SIGINT that came before the handler above was ignored
            return lost_outcome("interrupted", "sweep stopping; not started")
        return execute(item.task, item.config, item.checkpoint_path, item.threads)
    except KeyboardInterrupt:
        return lost_outcome("interrupted", "interrupted (SIGINT) before the task started")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------ driver side
def _context(modules: Sequence[str]) -> Any:
    """The fork-server context preloading torch (and ``modules`` it may), else spawn.

    Never plain fork: the driver has usually run torch work, whose thread pools do not survive
    a fork. The preload list only takes effect when the process's fork server (re)starts.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [*_SERVER_PRELOAD, *(name for name in modules if name in _SERVER_OPTIONAL)])
    return context


def _running(pid: int | None) -> bool:
    """Whether process ``pid`` exists (a zombie counts)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Worker:
    process: Any
    conn: Any
    key: str | None = None  # the job it runs, None when idle
    started: float = field(default_factory=time.monotonic)
    # False once the fork server that reports this worker's exit is gone (the worker is not);
    # its death then shows only as its pipe closing.
    sentinel_valid: bool = True


class WorkerPool:
    """``workers`` long-lived worker processes, each running one job at a time.

    Args:
        workers: Processes.
        threads: torch threads per process.
        warm_modules: Modules each worker imports before its first job.
    """

    def __init__(self, workers: int, threads: int, warm_modules: Sequence[str] = ()) -> None:
        self._modules = tuple(dict.fromkeys(warm_modules))
        self._context = _context(self._modules)
        self._forked = self._context.get_start_method() == "forkserver"
        self._stop = self._context.Event()
        self._threads = threads
        # Workers hold the read end; this process alone holds the write end and never writes.
        self._alive_r, self._alive_w = self._context.Pipe(duplex=False)
        self._workers = [self._start() for _ in range(workers)]

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main, name="dropoutlab-worker",
            args=(theirs, self._alive_r, self._stop, self._threads, self._modules,
                  dict(os.environ)))
        process.start()
        theirs.close()  # the worker holds its end; a dead worker then reads as EOF here
        return _Worker(process, ours)

    @property
    def idle(self) -> int:
        """Workers without a job."""
        return sum(worker.key is None for worker in self._workers)

    def submit(self, key: str, item: Any) -> None:
        """Hand ``item`` to an idle worker (the caller checks :attr:`idle` first)."""
        worker = next((w for w in self._workers if w.key is None), None)
        if worker is None:
            raise RuntimeError("no idle worker: submit only while WorkerPool.idle > 0")
        worker.key = key
        worker.conn.send(item)

    def wait(self, timeout: float) -> tuple[list[tuple[str, dict[str, Any]]],
                                            list[tuple[str, int, int]]]:
        """Wait up to ``timeout`` s for messages; returns ``(outcomes, epoch events)``.

        A worker that died while running a job gives that job a ``failed`` outcome and is
        replaced; every other worker and its job are unaffected.
        """
        outcomes: list[tuple[str, dict[str, Any]]] = []
        events: list[tuple[str, int, int]] = []
        watched = [w.conn for w in self._workers] + [
            w.process.sentinel for w in self._workers if w.sentinel_valid]
        ready = set(connection.wait(watched, timeout))
        for index, worker in enumerate(list(self._workers)):
            alive = self._read(worker, outcomes, events)
            if alive and worker.process.sentinel in ready:
                if self._forked and _running(worker.process.pid):
                    # the sentinel is the fork server's pipe: the server died, the worker lives
                    log.warning("the fork server died; pool worker %d carries on",
                                worker.process.pid)
                    worker.sentinel_valid = False
                else:
                    alive = False
            if not alive:
                self._kill(worker)  # pipe broken but maybe still running: end it
                if worker.key is not None:
                    code = worker.process.exitcode if worker.sentinel_valid else "unknown"
                    outcomes.append((worker.key, lost_outcome(
                        "failed", f"the worker process died (exit code {code}: killed, or out "
                        f"of memory) while running this job")))
                    log.warning("pool worker %d died (exit code %s) running %s; starting a "
                                "fresh worker", worker.process.pid, code, worker.key)
                worker.conn.close()
                self._workers[index] = self._start()
        return outcomes, events

    def _kill(self, worker: _Worker) -> None:
        """SIGKILL ``worker`` if it may still run, and reap it."""
        if worker.process.exitcode is None or not worker.sentinel_valid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.join(timeout=1.0)

    def _exited(self, worker: _Worker, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``worker`` to exit; True when it has."""
        if worker.sentinel_valid:
            worker.process.join(timeout=timeout)
            return worker.process.exitcode is not None
        deadline = time.monotonic() + timeout
        try:  # without its sentinel a worker's exit shows as its pipe's end of file
            while connection.wait([worker.conn], max(0.0, deadline - time.monotonic())):
                worker.conn.recv()  # a last outcome nobody waits for any more
        except (EOFError, OSError):
            return True
        return False

    def _read(self, worker: _Worker, outcomes: list[tuple[str, dict[str, Any]]],
              events: list[tuple[str, int, int]]) -> bool:
        """Take every message waiting from ``worker``; False when its pipe is closed."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "epoch":
                    events.append((message[1], message[2], message[3]))
                elif message[0] == "outcome" and message[1] == worker.key:
                    outcomes.append((message[1], message[2]))
                    worker.key = None
        except (EOFError, OSError):
            return False
        except Exception as err:  # a garbled message: treat the worker as lost
            log.warning("unreadable message from pool worker %s: %r", worker.process.pid, err)
            return False
        return True

    def interrupt(self) -> None:
        """Set the stop flag and send SIGINT to each busy worker (its task checkpoints)."""
        self._stop.set()
        for worker in self._workers:
            if worker.key is not None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGINT)

    def shutdown(self, *, hard: bool = False) -> None:
        """Ask every worker to exit after its job and reap them; a worker still busy after
        a few seconds is killed. ``hard``: kill every worker at once."""
        for worker in self._workers:
            if hard:
                self._kill(worker)
            else:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        deadline = time.monotonic() + _EXIT_GRACE_SECONDS
        for worker in self._workers:
            # an idle worker may still be warming up (importing torch): no need to wait for it
            grace = deadline - time.monotonic() if worker.key is not None else _IDLE_GRACE_SECONDS
            if not self._exited(worker, max(0.0, grace)):
                self._kill(worker)
            worker.conn.close()
        self._workers = []
        self._alive_w.close()  # any worker still alive now exits by itself
