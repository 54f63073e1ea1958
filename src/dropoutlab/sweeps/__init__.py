"""The sweep engine: grids of runs that scale and survive (Srivastava et al. 2014, §6–§7 grids).

- :mod:`~dropoutlab.sweeps.job`: a :class:`Job` (one run: config + task) and its key;
- :mod:`~dropoutlab.sweeps.driver`: :func:`run_sweep` with :class:`SweepOptions` — claim,
  run, store; resume after a crash with nothing lost or run twice;
- :mod:`~dropoutlab.sweeps.executors`: where runs go (the local pool, or Ray);
- :mod:`~dropoutlab.sweeps.local_pool`: the local executor's warm worker processes;
- :mod:`~dropoutlab.sweeps.execution`: what a worker does with one job;
- :mod:`~dropoutlab.sweeps.progress`: the progress bar and per-run log lines;
- :mod:`~dropoutlab.sweeps.store` and :mod:`~dropoutlab.sweeps.schema`: the SQLite results
  store and its migrations.

A single run (``dropoutlab.train``) knows nothing of this package.
"""

from __future__ import annotations

from dropoutlab.sweeps.driver import Failure, SweepOptions, SweepSummary, run_sweep
from dropoutlab.sweeps.job import DEFAULT_TASK, Job
from dropoutlab.sweeps.store import DEFAULT_STORE, RunRecord, Store

__all__ = [
    "DEFAULT_STORE",
    "DEFAULT_TASK",
    "Failure",
    "Job",
    "RunRecord",
    "Store",
    "SweepOptions",
    "SweepSummary",
    "run_sweep",
]
