"""Running one job inside a worker process, and the outcome it sends back to the driver.

:func:`execute` is the one function a worker calls: it sets torch's thread count, resolves the
task, resumes from the checkpoint when one exists, and turns whatever happens (a result, an
exception, Ctrl-C) into a plain, picklable outcome dict that the driver writes to the store.
Workers never touch the store.
"""

from __future__ import annotations

import json
import math
import socket
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dropoutlab.config import RunConfig
from dropoutlab.provenance import hardware_info, version_info
from dropoutlab.run_status import TASK_STATUSES
from dropoutlab.sweeps.job import resolve_task

__all__ = ["execute"]


def execute(
    task: str,
    config: Mapping[str, Any],
    checkpoint_path: str | None,
    threads: int,
) -> dict[str, Any]:
    """Run one job in the current (worker) process and describe what happened.

    Args:
        task: ``"module:function"`` of the task.
        config: The run config as :meth:`RunConfig.to_dict` (plain data travels everywhere).
        checkpoint_path: Where the task checkpoints; when the file exists the run resumes.
        threads: torch intra-op threads for this run (workers × threads ≤ cores).

    Returns:
        An outcome dict: ``status`` (``done``, ``diverged``, ``failed`` or ``interrupted``),
        ``metrics``, ``history``, ``extras``, ``error`` (a traceback or ``None``), ``seconds``,
        ``resumed``, ``versions``, ``hardware`` and ``host``.
    """
    import torch

    torch.set_num_threads(max(1, int(threads)))
    start = time.perf_counter()
    outcome: dict[str, Any] = {"metrics": {}, "history": [], "extras": {}, "error": None}
    path = Path(checkpoint_path) if checkpoint_path else None
    resume = path is not None and path.exists()
    try:
        fn = resolve_task(task)
        result = fn(RunConfig.from_dict(config), checkpoint_path=path, resume=resume)
        outcome.update(_checked_result(task, result))
    except KeyboardInterrupt:
        outcome.update(status="interrupted", error="interrupted (SIGINT); resumes from the "
                       "last checkpoint")
    except Exception:  # a failing run is recorded with its traceback; the sweep goes on
        outcome.update(status="failed", error=traceback.format_exc())
    outcome.update(
        seconds=time.perf_counter() - start,
        resumed=resume,
        versions=version_info(),
        hardware=hardware_info(),
        host=socket.gethostname(),
    )
    return outcome


def _checked_result(task: str, result: object) -> dict[str, Any]:
    """Validate a task's return value and make it JSON-safe (NaN/inf become ``None``)."""
    if not isinstance(result, Mapping):
        raise TypeError(f"task {task!r} must return a dict, got {type(result).__name__}")
    status = result.get("status", "done")
    if status not in TASK_STATUSES:
        raise ValueError(f"task {task!r} returned status={status!r}; "
                         f"expected one of {TASK_STATUSES}")
    checked = {
        "status": status,
        "metrics": dict(result.get("metrics") or {}),
        "history": list(result.get("history") or []),
        "extras": dict(result.get("extras") or {}),
    }
    # Round-trip through JSON now, in the worker, so an unstorable value fails this run
    # with a clear message instead of the driver's write.
    try:
        return json.loads(json.dumps(_finite(checked), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(f"task {task!r} returned a value that is not JSON data: {err}") from err


def _finite(value: Any) -> Any:
    """Replace non-finite floats (a diverged loss) by ``None``, recursively; tensors → Python."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
