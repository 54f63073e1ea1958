"""Where a sweep's jobs run: a local process pool (default) or a Ray cluster (design.md).

Both executors take plain work items — ``(task, config dict, checkpoint path, threads)`` — run
:func:`dropoutlab.sweeps.execution.execute` on them and hand the outcome dicts back to the driver,
which alone writes the store (so on a Ray cluster the store never has to be on a shared disk;
checkpoints, which workers write, do).

* :class:`LocalExecutor`: ``workers`` processes forked from a fork server that imported torch once
  (:mod:`dropoutlab.sweeps.local_pool`), ``threads`` torch threads each, ``workers × threads ≤
  cores``, warm and alive for the whole sweep. Each finished epoch is forwarded to the driver
  (:meth:`Executor.epoch_events`); a worker that dies fails only the run it held. Ctrl-C reaches
  only the driver, which forwards one SIGINT to each busy worker so its task checkpoints and stops;
  orphaned workers exit by themselves.
* :class:`RayExecutor`: one Ray task per job (``num_cpus=threads``, no Ray-level retries: the
  sweep's ``--retries`` decide). ``address=None`` starts a private local Ray instance. Epochs
  reach the driver through a small Ray queue actor. :meth:`RayExecutor.interrupt` cancels with
  ``force=False``, which in Ray (checked with 2.60) calls the task's own Python SIGINT handler:
  inside :func:`dropoutlab.train.train` that is the handler that writes the checkpoint, so a
  cancelled run checkpoints, stops, and reports ``interrupted`` like a local one. A task whose
  node died (the node, not the run, failed) comes back ``failed`` with ``node_lost`` set; the
  driver runs it again, from its checkpoint, without spending one of its retries.
"""

from __future__ import annotations

import logging
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dropoutlab.errors import DropoutlabError
from dropoutlab.provenance import usable_cores
from dropoutlab.sweeps.execution import execute
from dropoutlab.sweeps.local_pool import WorkerPool, lost_outcome

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "WorkItem", "check_executor",
           "make_executor"]

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


_lost = lost_outcome


class Executor(ABC):
    """Runs work items concurrently; the sweep driver polls it for outcomes."""

    capacity: int  # how many items may run at once

    @abstractmethod
    def submit(self, item: WorkItem) -> None:
        """Start ``item`` (only called while fewer than :attr:`capacity` are in flight)."""

    @abstractmethod
    def wait(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes ``(key, outcome)`` of items finished within ``timeout`` seconds."""

    def epoch_events(self) -> list[tuple[str, int, int]]:
        """``(key, epochs done, total epochs)`` heard since the last call (default: none; the
        progress display then moves when runs finish)."""
        return []

    @abstractmethod
    def interrupt(self) -> None:
        """Ask every running item to checkpoint and stop (outcome status ``interrupted``)."""

    @abstractmethod
    def shutdown(self, *, hard: bool = False) -> None:
        """Release the workers; ``hard`` kills running items without waiting."""


# ----------------------------------------------------------------------------- local pool
class LocalExecutor(Executor):
    """Long-lived, warm worker processes on this machine (:mod:`dropoutlab.sweeps.local_pool`).

    Args:
        workers: Processes; default ``cores // threads``.
        threads: torch threads per run; ``workers × threads`` must not exceed the cores.
        warm_modules: Modules each worker imports before its first job (task modules, data
            loaders' libraries), so the first run does not pay for them.
    """

    def __init__(self, workers: int | None = None, threads: int = 1,
                 warm_modules: Sequence[str] = ()) -> None:
        workers = _local_workers(workers, threads)
        self.capacity = workers
        self._pool = WorkerPool(workers, threads, warm_modules)
        self._events: list[tuple[str, int, int]] = []

    def submit(self, item: WorkItem) -> None:
        """Hand ``item`` to an idle worker."""
        self._pool.submit(item.key, item)

    def wait(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes of finished jobs; a dead worker fails only the job it was running."""
        outcomes, events = self._pool.wait(timeout)
        self._events.extend(events)
        return outcomes

    def epoch_events(self) -> list[tuple[str, int, int]]:
        """``(key, epochs done, total epochs)`` reported by running jobs since the last call."""
        events, self._events = self._events, []
        return events

    def interrupt(self) -> None:
        """Set the stop flag and send SIGINT to each busy worker (idle ones ignore it)."""
        self._pool.interrupt()

    def shutdown(self, *, hard: bool = False) -> None:
        """Stop the workers; ``hard`` kills them without waiting."""
        self._pool.shutdown(hard=hard)


# ------------------------------------------------------------------------------------ Ray
def _execute_reporting(queue: Any, key: str, task: str, config: dict[str, Any],
                       checkpoint_path: str | None, threads: int) -> dict[str, Any]:
    """A Ray task's body: :func:`execute` with each finished epoch put on ``queue``."""
    from dropoutlab import train

    def forward(done: int, total: int) -> None:
        queue.put_nowait((key, int(done), int(total)))

    previous = train.set_epoch_listener(forward)
    try:
        return execute(task, config, checkpoint_path, threads)
    finally:
        train.set_epoch_listener(previous)


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
        if not ray.is_initialized() and address is not None:
            _check_reachable(address)
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
        self._remote = ray.remote(_execute_reporting).options(num_cpus=threads, max_retries=0)
        from ray.util.queue import Queue

        self._epochs = Queue(actor_options={"num_cpus": 0})
        self._running: dict[Any, str] = {}
        self._nodes_at_submit: dict[Any, int] = {}  # alive nodes when each task started

    def submit(self, item: WorkItem) -> None:
        """Start ``item`` as a Ray task."""
        ref = self._remote.remote(self._epochs, item.key, item.task, item.config,
                                  item.checkpoint_path, item.threads)
        self._running[ref] = item.key
        self._nodes_at_submit[ref] = self._alive_nodes()

    def wait(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes of finished Ray tasks; a crashed or cancelled task becomes an outcome."""
        if not self._running:
            return []
        ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running),
                                  timeout=timeout)
        results = []
        for ref in ready:
            key = self._running.pop(ref)
            nodes_before = self._nodes_at_submit.pop(ref, 0)
            try:
                results.append((key, self._ray.get(ref)))
            except self._ray.exceptions.TaskCancelledError:
                results.append((key, _lost("interrupted", "cancelled (sweep stopping)")))
            except self._ray.exceptions.RayError as err:
                if self._node_lost(err, nodes_before):
                    outcome = _lost("failed", f"Ray node lost while running: {err}")
                    results.append((key, {**outcome, "node_lost": True}))
                else:
                    results.append((key, _lost("failed", f"Ray task failed: {err}")))
        return results

    def _alive_nodes(self) -> int:
        try:
            return sum(1 for node in self._ray.nodes() if node.get("Alive"))
        except Exception as err:  # bookkeeping only: never fail a sweep for it
            log.debug("could not list the Ray nodes: %s", err)
            return 0

    def _node_lost(self, err: Exception, nodes_before: int) -> bool:
        """Whether a task failed because its node died (not because of the task itself)."""
        exceptions = self._ray.exceptions
        if isinstance(err, exceptions.NodeDiedError | exceptions.LocalRayletDiedError):
            return True
        return (isinstance(err, exceptions.WorkerCrashedError)
                and 0 < self._alive_nodes() < nodes_before)

    def epoch_events(self) -> list[tuple[str, int, int]]:
        """Epoch counts the running tasks put on the queue actor since the last call."""
        try:
            waiting = self._epochs.qsize()
            return list(self._epochs.get_nowait_batch(waiting)) if waiting else []
        except Exception as err:  # progress is cosmetic: never stop a sweep for it
            log.debug("could not read epoch events from Ray: %s", err)
            return []

    def interrupt(self) -> None:
        """Cancel every running task: Ray calls its SIGINT handler (train() checkpoints)."""
        for ref in self._running:
            self._ray.cancel(ref, force=False)

    def shutdown(self, *, hard: bool = False) -> None:
        """Cancel what is left (``hard``) and stop the Ray instance if this executor started it."""
        if hard:
            for ref in self._running:
                self._ray.cancel(ref, force=True)
        self._running.clear()
        try:
            self._epochs.shutdown()
        except Exception as err:  # the cluster may already be gone
            log.debug("could not stop the epoch queue actor: %s", err)
        if self._owns_ray:
            self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` nothing listens on (ray.init would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise DropoutlabError(
            f"`ray_address` must be a running Ray cluster's head (host:port), got "
            f"ray_address={address!r}, where nothing answers ({err.strerror or err}); start one "
            f"with `ray start --head` or pass the address it printed") from None


def _local_workers(workers: int | None, threads: int) -> int:
    """The local pool's size: ``workers``, default ``cores // threads``, checked to fit."""
    cores = usable_cores()
    if workers is None:
        workers = max(1, cores // threads)
    if workers * threads > cores:
        raise DropoutlabError(
            f"`workers` × `threads_per_run` must not exceed the {cores} usable cores, got "
            f"workers={workers} × threads_per_run={threads} = {workers * threads}; pass "
            f"fewer --workers or --threads-per-run"
        )
    return workers


def check_executor(name: str, *, workers: int | None = None, threads: int = 1,
                   ray_address: str | None = None) -> None:
    """The checks :func:`make_executor` makes, without starting anything, so a sweep can
    refuse bad settings before it touches the store.

    Raises:
        DropoutlabError: unknown executor, ``ray_address`` without Ray, more local workers
            than cores, or a Ray address where nothing answers.
    """
    if name not in EXECUTORS:
        raise DropoutlabError(f"`executor` must be one of {EXECUTORS}, got executor={name!r}")
    if name == "local":
        if ray_address is not None:
            raise DropoutlabError("`ray_address` is only used with executor='ray', got "
                                  f"executor='local' and ray_address={ray_address!r}")
        _local_workers(workers, threads)
    elif ray_address is not None:
        _check_reachable(ray_address)


def make_executor(name: str, *, workers: int | None = None, threads: int = 1,
                  ray_address: str | None = None, warm_modules: Sequence[str] = ()) -> Executor:
    """Build the executor called ``name`` (``"local"`` or ``"ray"``).

    ``warm_modules`` are imported by each local worker before its first job (Ray keeps its
    own worker processes alive across tasks, so there the first task on a worker imports them).
    """
    check_executor(name, workers=workers, threads=threads,
                   ray_address=ray_address if name == "local" else None)
    if name == "local":
        return LocalExecutor(workers, threads, warm_modules)
    return RayExecutor(ray_address, workers, threads)
