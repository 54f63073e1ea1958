"""The sweep engine: run a grid of jobs so nothing is lost and nothing is run twice.

The paper's results are grids of runs (retention × size × regularizer × seed; Srivastava et al.
2014, §6–§7). :func:`run_sweep` registers every job in the store, skips finished runs, *claims* each
remaining run atomically before running it (so two sweeps on one store never run the same config),
runs it on an executor (:mod:`dropoutlab.sweeps.executors`), and writes each outcome in its own
transaction. The driver heartbeats its claims; a run held by a dead process is taken over.

Resume semantics (the same for ``local`` and ``ray``):

* finished runs (``done``, ``diverged``) are skipped;
* a run that was running when a sweep died resumes from its last checkpoint
  (``<checkpoint_dir>/<config_hash>.pt``);
* a failed run is retried up to ``retries`` times, then reported; the sweep goes on past it
  (a local pool worker that dies costs only the run it held an attempt; a Ray node that dies
  costs nothing: its runs go on elsewhere from their checkpoints, up to ``MAX_NODE_LOSSES``
  times each);
* Ctrl-C (SIGINT) or SIGTERM: running runs checkpoint and go back to ``pending``, the summary
  says so, and the same call resumes. A second Ctrl-C stops at once (runs still go back to
  ``pending`` and resume from their last periodic checkpoint).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from dropoutlab.errors import DropoutlabError
from dropoutlab.provenance import git_commit
from dropoutlab.run_status import FINAL_STATUSES
from dropoutlab.sweeps.executors import (
    EXECUTORS,
    Executor,
    WorkItem,
    check_executor,
    make_executor,
)
from dropoutlab.sweeps.job import Job, resolve_task
from dropoutlab.sweeps.progress import SweepProgress
from dropoutlab.sweeps.store import DEFAULT_STORE, Store

__all__ = ["Failure", "SweepOptions", "SweepSummary", "run_sweep"]

log = logging.getLogger(__name__)

# Data sets whose loader imports a heavy library (sklearn), warmed in each worker.
_DATASET_MODULES = {"digits": "sklearn.datasets"}
POLL_SECONDS = 0.25  # how often the driver looks at the executor and at signals
HEARTBEAT_SECONDS = 5.0  # how often the driver marks its claimed runs alive
STALE_SECONDS = 60.0  # a claim with no heartbeat for this long belongs to a dead process
MAX_NODE_LOSSES = 3  # a run whose node dies more often than this counts it as a failure


@dataclass(frozen=True)
class Failure:
    """A run that still failed after its retries."""

    config_hash: str
    experiment: str
    name: str
    attempts: int
    message: str  # the last line of the traceback; the store keeps the full text


@dataclass
class SweepSummary:
    """What a sweep did. ``ok`` is true when every run of the sweep is finished.

    Counts are of distinct runs (a config asked for twice is one run): ``done`` and
    ``diverged`` finished in this sweep, ``skipped`` were already finished, ``failed`` still
    failed after retries, ``interrupted`` were stopped by Ctrl-C (they resume), ``pending`` are
    neither (held by another live sweep when this one stopped).
    """

    store: Path
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    diverged: int = 0
    interrupted: int = 0
    pending: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    stopped: bool = False  # stopped by Ctrl-C / SIGTERM

    @property
    def ok(self) -> bool:
        """True when every run of the sweep is done or diverged."""
        return not (self.failed or self.interrupted or self.pending or self.stopped)

    @property
    def exit_code(self) -> int:
        """0 when ok, 130 after Ctrl-C, 1 when runs failed or remain."""
        return 0 if self.ok else 130 if self.stopped else 1

    def lines(self) -> list[str]:
        """A short human summary (the CLI prints it)."""
        out = [f"{self.total} runs: {self.done} done, {self.diverged} diverged, "
               f"{self.skipped} already stored, {self.failed} failed, "
               f"{self.interrupted} interrupted, {self.pending} pending "
               f"({self.seconds:.1f} s; store {self.store})"]
        for failure in self.failures:
            out.append(f"  failed: [{failure.experiment}] {failure.name} "
                       f"({failure.config_hash}, {failure.attempts} attempts): {failure.message}")
        if self.stopped:
            out.append("stopped: running runs were checkpointed; run the same command again "
                       "to resume")
        elif self.failed:
            out.append("failed runs keep their traceback: dropoutlab runs --status failed "
                       "--json; running the same command again retries them")
        return out


@dataclass(frozen=True)
class SweepOptions:
    """How a grid runs: everything :func:`run_sweep` needs besides the jobs.

    The one spelling of the sweep settings, carried unchanged from the CLI flags
    (``dropoutlab sweep``/``reproduce``) to the driver.

    Attributes:
        store: The SQLite results file (created if missing).
        executor: ``"local"`` (process pool) or ``"ray"``.
        workers: Runs at once; default: cores ``// threads_per_run`` (Ray: cluster CPUs).
        threads_per_run: torch threads per run.
        retries: Extra attempts for a run that fails (an exception, a crashed worker).
        checkpoint_dir: Where runs checkpoint for mid-run resume; default
            ``<store folder>/checkpoints``. On a Ray cluster it must be shared storage that
            every node sees at the same path.
        ray_address: Ray cluster address; ``None`` starts a local Ray instance.
        progress: A rich bar on stderr counting runs and epochs with an ETA; ``None`` shows
            one when stderr is a terminal, otherwise (and with ``False``) INFO log lines say
            each finished run and, at most every 30 s, the epoch counts
            (:mod:`dropoutlab.sweeps.progress`).

    Raises:
        DropoutlabError: an invalid setting (the message names it and the value received).
    """

    store: Path = DEFAULT_STORE
    executor: str = "local"
    workers: int | None = None
    threads_per_run: int = 1
    retries: int = 1
    checkpoint_dir: Path | None = None
    ray_address: str | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store))
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))
        if self.executor not in EXECUTORS:
            raise DropoutlabError(f"`executor` must be one of {EXECUTORS}, "
                                  f"got executor={self.executor!r}")
        workers = self.workers
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise DropoutlabError(f"`workers` must be an integer >= 1, got workers={workers!r}")
        threads = self.threads_per_run
        if isinstance(threads, bool) or threads < 1:
            raise DropoutlabError(f"`threads_per_run` must be an integer >= 1, "
                                  f"got threads_per_run={threads!r}")
        if isinstance(self.retries, bool) or self.retries < 0:
            raise DropoutlabError(f"`retries` must be an integer >= 0, "
                                  f"got retries={self.retries!r}")

    @property
    def checkpoints(self) -> Path:
        """Where runs checkpoint: ``checkpoint_dir``, or ``<store folder>/checkpoints``."""
        return self.checkpoint_dir or self.store.parent / "checkpoints"


def run_sweep(jobs: Sequence[Job], options: SweepOptions | None = None) -> SweepSummary:
    """Run every job not yet finished in the store; see the module docstring for semantics.

    Args:
        jobs: The grid. Jobs with the same config and task are one run (linked to each
            experiment that asks for it).
        options: Store, executor and the other settings; default :class:`SweepOptions`.

    Returns:
        The :class:`SweepSummary`; check ``summary.ok`` / ``summary.exit_code``.

    Raises:
        StoreError: the store cannot be opened or written (nothing is overwritten).
        DropoutlabError: invalid arguments (the message names the argument).
    """
    options = options or SweepOptions()
    started = time.perf_counter()
    unique: dict[str, Job] = {}
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"`jobs` must contain Job objects, got {type(job).__name__}")
        unique.setdefault(job.key, job)
    for task in sorted({job.task for job in unique.values()}):
        resolve_task(task)  # a typo fails here, once, not in every worker
    # Bad executor settings are refused before the store is created or touched.
    check_executor(options.executor, workers=options.workers, threads=options.threads_per_run,
                   ray_address=options.ray_address)
    ckpt_dir = options.checkpoints
    summary = SweepSummary(store=options.store, total=len(unique))
    with Store(options.store) as db:
        statuses = db.register(jobs)
        todo = [key for key in unique if statuses[key] not in FINAL_STATUSES]
        summary.skipped = summary.total - len(todo)
        if todo:
            try:
                ckpt_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DropoutlabError(f"`checkpoint_dir` {str(ckpt_dir)!r} cannot be created: "
                                      f"{err.strerror or err}") from None
            pool = make_executor(options.executor, workers=options.workers,
                                 threads=options.threads_per_run,
                                 ray_address=options.ray_address,
                                 warm_modules=_warm_modules(unique[key] for key in todo))
            with SweepProgress({key: unique[key].config.epochs for key in todo},
                               enabled=options.progress) as shown:
                driver = _Driver(db, pool, unique, ckpt_dir.resolve(), options.threads_per_run,
                                 options.retries, summary, shown)
                driver.run(todo)
    summary.seconds = time.perf_counter() - started
    for line in summary.lines():  # the CLI prints the summary; keep it out of its log lines
        log.debug("%s", line)
    return summary


class _Stop:
    """Counts SIGINT/SIGTERM while a sweep runs (1: stop cleanly, 2: stop now)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1


@contextmanager
def _signals_caught(stop: _Stop) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``stop`` (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _warm_modules(jobs: Iterable[Job]) -> list[str]:
    """What each local worker imports before its first job: the task modules, and the
    libraries behind the jobs' data sets."""
    modules: dict[str, None] = {}
    for job in jobs:
        modules[job.task.partition(":")[0]] = None
        extra = _DATASET_MODULES.get(job.config.data.dataset)
        if extra:
            modules[extra] = None
    return list(modules)


class _Driver:
    """The sweep loop: claim, submit, collect, store, heartbeat."""

    def __init__(self, db: Store, pool: Executor, jobs: dict[str, Job], ckpt_dir: Path,
                 threads: int, retries: int, summary: SweepSummary,
                 progress: SweepProgress) -> None:
        self.db, self.pool, self.jobs, self.progress = db, pool, jobs, progress
        self.ckpt_dir, self.threads, self.retries = ckpt_dir, threads, retries
        self.summary = summary
        self.tries: dict[str, int] = {}
        self.node_losses: dict[str, int] = {}  # Ray node deaths per run, retried for free
        self.claims: dict[str, str] = {}  # key → claim token, for runs in flight here
        self.held_elsewhere: dict[str, float] = {}  # key → when to try claiming it again
        self.commit = git_commit()
        self.stop = _Stop()

    def checkpoint(self, key: str) -> Path:
        return self.ckpt_dir / f"{key}.pt"

    def run(self, todo: list[str]) -> None:
        queue = deque(todo)
        last_beat = time.monotonic()
        with _signals_caught(self.stop):
            try:
                while (queue or self.claims) and not self.stop.count:
                    self._fill(queue)
                    if not self.claims:
                        if queue:  # everything left is held by other live sweeps: wait
                            time.sleep(1.0)
                        continue
                    for key, outcome in self.pool.wait(POLL_SECONDS):
                        self._store(key, outcome, queue)
                    self._show_epochs()
                    if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                        self.db.heartbeat(self.claims.values())
                        last_beat = time.monotonic()
                if self.stop.count:
                    self._drain()
            finally:
                self.pool.shutdown(hard=bool(self.claims))
                for key, token in list(self.claims.items()):  # only after a hard stop
                    self.db.release(key, token, "stopped before the run reported")
                    self.summary.interrupted += 1
                self.claims.clear()
        self.summary.stopped = self.stop.count > 0
        self.summary.pending = len(queue)

    def _fill(self, queue: deque[str]) -> None:
        """Claim and submit runs while the executor has room."""
        for key in list(queue):
            if len(self.claims) >= self.pool.capacity:
                return
            if self.held_elsewhere.get(key, 0.0) > time.monotonic():
                continue
            tries = self.tries.get(key, 0)
            token = self.db.claim(key, retry_failed=tries <= self.retries,
                                  stale_after=STALE_SECONDS)
            if token is None:
                status = self.db.statuses([key]).get(key)
                if status in FINAL_STATUSES:  # another sweep finished it meanwhile
                    queue.remove(key)
                    self.summary.skipped += 1
                    self.progress.finished(key)
                else:  # running in another live sweep: look again in a while
                    if key not in self.held_elsewhere:
                        log.info("run %s is running in another sweep; waiting for it", key)
                    self.held_elsewhere[key] = time.monotonic() + 2.0
                continue
            queue.remove(key)
            self.tries[key] = tries + 1
            self.claims[key] = token
            job = self.jobs[key]
            self.pool.submit(WorkItem(key, job.task, job.config.to_dict(),
                                      str(self.checkpoint(key)), self.threads))
            log.debug("started %s [%s] %s", key, job.experiment, job.name)

    def _store(self, key: str, outcome: dict[str, Any], queue: deque[str]) -> None:
        """Write one outcome; requeue a failure that has retries left."""
        token = self.claims.pop(key)
        job = self.jobs[key]
        status = outcome["status"]
        if not self.db.finish(key, token, outcome, self.commit):
            return
        if status in FINAL_STATUSES:
            setattr(self.summary, status, getattr(self.summary, status) + 1)
            self.checkpoint(key).unlink(missing_ok=True)
            self.progress.finished(key, f"{status:<8} [{job.experiment}] {job.name} "
                                        f"({outcome.get('seconds', 0.0):.1f} s)")
        elif status == "interrupted":
            self.summary.interrupted += 1
        elif (outcome.get("node_lost") and self.node_losses.get(key, 0) < MAX_NODE_LOSSES
              and not self.stop.count):
            self.node_losses[key] = self.node_losses.get(key, 0) + 1
            self.tries[key] -= 1  # the node failed, not the run: no retry is spent
            log.warning("run [%s] %s lost its Ray node; running it again from its checkpoint",
                        job.experiment, job.name)
            queue.append(key)
        elif self.tries[key] <= self.retries and not self.stop.count:
            log.warning("run [%s] %s failed (attempt %d of %d); retrying: %s", job.experiment,
                        job.name, self.tries[key], self.retries + 1, _last_line(outcome))
            queue.append(key)
        else:
            self.summary.failed += 1
            self.summary.failures.append(Failure(key, job.experiment, job.name,
                                                 self.tries[key], _last_line(outcome)))
            self.progress.finished(key, f"failed   [{job.experiment}] {job.name}: "
                                        f"{_last_line(outcome)}")

    def _drain(self) -> None:
        """After Ctrl-C: ask running runs to checkpoint, store what they report."""
        log.warning("stopping: %d running runs checkpoint and stop (Ctrl-C again to stop "
                    "at once)", len(self.claims))
        self.pool.interrupt()
        first = self.stop.count
        last_beat = time.monotonic()
        while self.claims and self.stop.count == first:
            for key, outcome in self.pool.wait(POLL_SECONDS):
                self._store(key, outcome, deque())
            if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                self.db.heartbeat(self.claims.values())
                last_beat = time.monotonic()

    def _show_epochs(self) -> None:
        for key, done, total in self.pool.epoch_events():
            self.progress.epoch(key, done, total)
        self.progress.tick()


def _last_line(outcome: dict[str, Any]) -> str:
    text = (outcome.get("error") or "").strip()
    return text.splitlines()[-1] if text else "no message"
