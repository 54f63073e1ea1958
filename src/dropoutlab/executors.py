"""Where a sweep's jobs run: a local process pool (default) or a Ray cluster (design.md).

Both executors take plain work items — ``(task, config dict, checkpoint path, threads)`` — run
:func:`dropoutlab.jobs.execute` on them and hand the outcome dicts back to the driver, which alone
writes the store (so on a Ray cluster the store never has to be on a shared disk; checkpoints,
which workers write, do).

* :class:`LocalExecutor`: ``workers`` spawned processes, ``threads`` torch threads each,
  ``workers × threads ≤ cores``. Workers live in their own process group (a terminal's Ctrl-C
  reaches only the driver, which forwards one SIGINT to each worker so a running task
  checkpoints and stops), ignore SIGINT while idle, and exit by themselves if the driver dies
  (even by SIGKILL) so an orphan never keeps writing a checkpoint another sweep resumes from.
* :class:`RayExecutor`: one Ray task per job (``num_cpus=threads``, no Ray-level retries: the
  sweep's ``--retries`` decide). ``address=None`` starts a private local Ray instance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from abc import ABC, abstractmethod
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from dropoutlab.errors import DropoutlabError
from dropoutlab.jobs import execute, usable_cores

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "WorkItem", "make_executor"]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class WorkItem:
    """What a worker needs to run one job: all plain data, picklable anywhere."""

    key: str
    task: str
    config: dict[str, Any]
    checkpoint_path: str | None
    threads: int


def _lost(status: str, message: str) -> dict[str, Any]:
    """An outcome for a job whose worker never reported (crashed, cancelled)."""
    return {"status": status, "metrics": {}, "history": [], "extras": {}, "error": message,
            "seconds": 0.0}


class Executor(ABC):
    """Runs work items concurrently; the sweep driver polls it for outcomes."""

    capacity: int  # how many items may run at once

    @abstractmethod
    def submit(self, item: WorkItem) -> None:
        """Start ``item`` (only called while fewer than :attr:`capacity` are in flight)."""

    @abstractmethod
    def wait(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes ``(key, outcome)`` of items finished within ``timeout`` seconds."""

    @abstractmethod
    def interrupt(self) -> None:
        """Ask every running item to checkpoint and stop (outcome status ``interrupted``)."""

    @abstractmethod
    def shutdown(self, *, hard: bool = False) -> None:
        """Release the workers; ``hard`` kills running items without waiting."""


# ----------------------------------------------------------------------------- local pool
_stop_event: Any = None  # set in each pool worker by _init_worker


def _init_worker(stop_event: Any, parent_pid: int) -> None:
    """Pool worker setup: own process group, SIGINT ignored while idle, die with the driver."""
    global _stop_event
    _stop_event = stop_event
    with contextlib.suppress(OSError):  # not permitted on some platforms
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:  # the driver is gone (killed): stop writing now
                os._exit(70)

    threading.Thread(target=watch, name="dropoutlab-orphan-watch", daemon=True).start()


def _run_in_worker(item: WorkItem) -> dict[str, Any]:
    """Pool entry point: SIGINT raises KeyboardInterrupt while a task runs (train() replaces
    this with its own handler, which checkpoints first)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if _stop_event is not None and _stop_event.is_set():
            return _lost("interrupted", "sweep stopping; not started")
        return execute(item.task, item.config, item.checkpoint_path, item.threads)
    except KeyboardInterrupt:
        return _lost("interrupted", "interrupted (SIGINT) before the task started")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor(Executor):
    """A pool of spawned processes on this machine.

    Args:
        workers: Processes; default ``cores // threads``.
        threads: torch threads per run; ``workers × threads`` must not exceed the cores.
    """

    def __init__(self, workers: int | None = None, threads: int = 1) -> None:
        import multiprocessing

        cores = usable_cores()
        if workers is None:
            workers = max(1, cores // threads)
        if workers * threads > cores:
            raise DropoutlabError(
                f"`workers` × `threads_per_run` must not exceed the {cores} usable cores, got "
                f"workers={workers} × threads_per_run={threads} = {workers * threads}"
            )
        self.capacity = workers
        # spawn, never fork: the driver has imported torch, whose thread pools do not survive
        # a fork.
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._pool = self._new_pool()
        self._running: dict[futures.Future[dict[str, Any]], str] = {}

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(
            max_workers=self.capacity, mp_context=self._context, initializer=_init_worker,
            initargs=(self._stop, os.getpid()),
        )

    def submit(self, item: WorkItem) -> None:
        """Queue ``item`` on the pool."""
        try:
            future = self._pool.submit(_run_in_worker, item)
        except BrokenProcessPool:
            self._renew_pool()
            future = self._pool.submit(_run_in_worker, item)
        self._running[future] = item.key

    def wait(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes of finished futures; a dead worker fails its run (the sweep may retry)."""
        if not self._running:
            return []
        finished, _ = futures.wait(self._running, timeout=timeout,
                                   return_when=futures.FIRST_COMPLETED)
        results = []
        broken = False
        for future in finished:
            key = self._running.pop(future)
            if future.cancelled():
                results.append((key, _lost("interrupted", "cancelled before it started")))
                continue
            err = future.exception()
            if err is None:
                results.append((key, future.result()))
            elif isinstance(err, BrokenProcessPool):
                broken = True
                results.append((key, _lost("failed", "the worker process died (killed, or "
                                           "out of memory) while running this job")))
            elif isinstance(err, KeyboardInterrupt):
                results.append((key, _lost("interrupted", "interrupted (SIGINT)")))
            else:
                text = "".join(traceback.format_exception(err))
                results.append((key, _lost("failed", text)))
        if broken:
            self._renew_pool()
        return results

    def _renew_pool(self) -> None:
        log.warning("a pool worker died; starting a fresh pool")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def interrupt(self) -> None:
        """Set the stop flag and send SIGINT to each worker (idle ones ignore it)."""
        self._stop.set()
        for future in self._running:
            future.cancel()  # only succeeds for items not yet started
        for pid in self._worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    def shutdown(self, *, hard: bool = False) -> None:
        """Stop the pool; ``hard`` kills the workers first."""
        if hard:
            for pid in self._worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._pool.shutdown(wait=not hard, cancel_futures=True)

    def _worker_pids(self) -> list[int]:
        # ProcessPoolExecutor keeps its processes in a private dict; there is no public API.
        processes = getattr(self._pool, "_processes", None) or {}
        return list(processes)


# ------------------------------------------------------------------------------------ Ray
class RayExecutor(Executor):
    """One Ray task per job on a Ray cluster (or a local instance it starts).

    Args:
        address: ``ray.init`` address (``"auto"``, ``"ray://host:10001"``…); ``None`` starts a
            local instance with this machine's cores, shut down again at the end.
        workers: Jobs in flight at once; default: the cluster's CPUs ``// threads``.
        threads: CPUs each Ray task reserves and torch threads it uses.
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 threads: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise DropoutlabError("the ray executor needs the `ray` package: "
                                  "pip install 'dropoutlab[ray]'") from None
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address is None:
                kwargs["num_cpus"] = usable_cores()
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise DropoutlabError(f"cannot reach a Ray cluster at ray_address={address!r}: "
                                      f"{err}") from None
            self._owns_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if threads > cpus:
            raise DropoutlabError(f"`threads_per_run` must not exceed the cluster's {cpus} "
                                  f"CPUs, got threads_per_run={threads}")
        self.capacity = workers if workers is not None else max(1, cpus // threads)
        self._remote = ray.remote(execute).options(num_cpus=threads, max_retries=0)
        self._running: dict[Any, str] = {}

    def submit(self, item: WorkItem) -> None:
        """Start ``item`` as a Ray task."""
        ref = self._remote.remote(item.task, item.config, item.checkpoint_path, item.threads)
        self._running[ref] = item.key

    def wait(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes of finished Ray tasks; a crashed or cancelled task becomes an outcome."""
        if not self._running:
            return []
        ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running),
                                  timeout=timeout)
        results = []
        for ref in ready:
            key = self._running.pop(ref)
            try:
                results.append((key, self._ray.get(ref)))
            except self._ray.exceptions.TaskCancelledError:
                results.append((key, _lost("interrupted", "cancelled (sweep stopping)")))
            except self._ray.exceptions.RayError as err:
                results.append((key, _lost("failed", f"Ray task failed: {err}")))
        return results

    def interrupt(self) -> None:
        """Cancel every running task (Ray raises KeyboardInterrupt in it)."""
        for ref in self._running:
            self._ray.cancel(ref, force=False)

    def shutdown(self, *, hard: bool = False) -> None:
        """Cancel what is left (``hard``) and stop the Ray instance if this executor started it."""
        if hard:
            for ref in self._running:
                self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns_ray:
            self._ray.shutdown()


def make_executor(name: str, *, workers: int | None = None, threads: int = 1,
                  ray_address: str | None = None) -> Executor:
    """Build the executor called ``name`` (``"local"`` or ``"ray"``)."""
    if name == "local":
        if ray_address is not None:
            raise DropoutlabError("`ray_address` is only used with executor='ray', got "
                                  f"executor='local' and ray_address={ray_address!r}")
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(ray_address, workers, threads)
    raise DropoutlabError(f"`executor` must be one of {EXECUTORS}, got executor={name!r}")
