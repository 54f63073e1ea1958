"""What a running sweep shows: runs finished and *epochs* trained across all runs, with an ETA.

Counting only finished runs leaves a sweep of a few long runs (the paper's learning curves,
Srivastava et al. 2014, §6.1) at 0/N for minutes. :class:`SweepProgress` counts epochs too:
the executors forward each run's ``(epochs done, total)`` (:func:`dropoutlab.train.report_epoch`)
and the display reads, e.g., ``runs 2/6 · epochs 137/360 · ETA 3m10s``.

* On a terminal (``enabled=True``): a rich bar on stderr over the epochs, with that text, and
  one printed line per finished run above it.
* Otherwise: plain ``logging`` INFO lines — one per finished run, and a summary at most every
  ``every`` seconds (30 s) while epochs advance. The CLI shows ``dropoutlab``'s INFO lines.

A run's epoch total is its ``config.epochs``; a task that never reports epochs (or an executor
that cannot forward them) still moves the count when it finishes. The ETA divides the epochs
left by the rate of epochs trained in this sweep since the first epoch count arrived (so the
workers' start-up is not in it; epochs a resumed run had done before do not count); before
any epoch is heard it uses finished runs instead.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SweepProgress", "format_duration"]

log = logging.getLogger("dropoutlab.sweeps")

SUMMARY_EVERY_SECONDS = 30.0


def format_duration(seconds: float) -> str:
    """``75`` → ``"1m15s"``, ``3700`` → ``"1h01m"``, ``9`` → ``"9s"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class SweepProgress:
    """Counts of a running sweep, shown as a rich bar or as occasional log lines.

    Args:
        epochs: ``{run key: config.epochs}`` for every run this sweep will execute.
        enabled: A rich bar on stderr; ``None``: when stderr is a terminal; ``False``: plain
            log lines.
        every: Seconds between plain summary lines.
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(self, epochs: Mapping[str, int], *, enabled: bool | None = None,
                 every: float = SUMMARY_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.totals = {key: max(0, int(n)) for key, n in epochs.items()}
        self.done: dict[str, int] = {}
        self.runs_finished = 0
        self.gained = 0  # epochs trained during this sweep (the rate's numerator)
        self.every, self.clock = every, clock
        self.started = clock()
        self._last_line = self.started
        self._last_shown = -1
        self._rate_start: float | None = None  # when the first epoch count arrived
        self._bar: Any = None
        self._console: Any = None
        self._task: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled

    # -------------------------------------------------------------------------- counting
    @property
    def epochs_total(self) -> int:
        """Epochs of every run of the sweep."""
        return sum(self.totals.values())

    @property
    def epochs_done(self) -> int:
        """Epochs done so far (finished runs count in full)."""
        return sum(self.done.values())

    def epoch(self, key: str, done: int, total: int) -> None:
        """A run reports ``done`` of ``total`` epochs (its first report sets a baseline)."""
        if key not in self.totals:
            return
        cap = self.totals[key] or total
        done = max(0, min(int(done), cap))
        before = self.done.get(key)
        if self._rate_start is None:
            self._rate_start = self.clock()  # workers are warm: the rate is measured from here
        if before is not None and done > before:
            self.gained += done - before
        self.done[key] = done
        self._refresh()

    def finished(self, key: str, line: str | None = None) -> None:
        """A run is finished for this sweep (done, diverged, failed for good, or skipped)."""
        if key in self.totals:
            self.runs_finished += 1
            self.done[key] = self.totals[key]
        if line:
            line = f"{line} · {self.text()}"
            if self._console is not None:
                self._console.log(line)
            else:
                log.info("%s", line)
                self._last_line = self.clock()
        self._refresh()

    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far, or ``None`` before there is a rate."""
        elapsed = self.clock() - self.started
        if self.gained > 0 and self._rate_start is not None:
            rate = self.gained / max(self.clock() - self._rate_start, 1e-9)
            return (self.epochs_total - self.epochs_done) / rate
        if self.runs_finished > 0:
            return elapsed * (len(self.totals) - self.runs_finished) / self.runs_finished
        return None

    def text(self) -> str:
        """``runs 2/6 · epochs 137/360 · ETA 3m10s``."""
        eta = self.eta_seconds()
        return (f"runs {self.runs_finished}/{len(self.totals)} · epochs {self.epochs_done}/"
                f"{self.epochs_total} · ETA {'?' if eta is None else format_duration(eta)}")

    # --------------------------------------------------------------------------- display
    def tick(self) -> None:
        """Called by the driver every poll: the periodic plain line, the bar's ETA."""
        self._refresh()

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.epochs_done, counts=self.text())
            return
        now = self.clock()
        if now - self._last_line >= self.every and self.epochs_done != self._last_shown:
            log.info("sweep: %s (%s elapsed)", self.text(), format_duration(now - self.started))
            self._last_line, self._last_shown = now, self.epochs_done

    def __enter__(self) -> SweepProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._console = Console(stderr=True)
            self._bar = Progress(TextColumn("sweep"), BarColumn(),
                                 TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                 console=self._console)
            self._bar.start()
            self._task = self._bar.add_task("sweep", total=max(1, self.epochs_total),
                                            completed=0, counts=self.text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()
            self._bar = self._console = None
