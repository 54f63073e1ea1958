"""The states of a stored run, named once for the store, the sweep driver, the CLI and reports."""

from __future__ import annotations

__all__ = ["FINAL_STATUSES", "RUN_STATUSES", "TASK_STATUSES", "UNSUCCESSFUL_STATUSES"]

# Every state a run in the store can be in.
RUN_STATUSES = ("pending", "running", "done", "failed", "diverged")
# What a task may report; "failed" and "interrupted" are added by the worker that runs it.
TASK_STATUSES = ("done", "diverged")
# A run in one of these states is finished: a sweep skips it and never runs it again.
FINAL_STATUSES = TASK_STATUSES
# Runs that finished without a usable result, or did not finish.
UNSUCCESSFUL_STATUSES = ("failed", "diverged")
