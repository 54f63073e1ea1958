"""The unit of a sweep: a :class:`Job`, and what runs it inside a worker process.

The paper's results are grids (retention × size × regularizer × seed, Srivastava et al. 2014,
§6–§7); each cell is one job. A job names its task as a ``"module:function"`` path so any worker
(a local pool process or a Ray worker on another machine) can import it. A task has the
signature ``fn(config, *, checkpoint_path=None, resume=False) -> dict`` and returns
``{"status": ..., "metrics": {...}, "history": [...], "extras": {...}}``.

:func:`execute` is the one function a worker calls: it sets torch's thread count, resolves the
task, resumes from the checkpoint when one exists, and turns whatever happens (a result, an
exception, Ctrl-C) into a plain, picklable :class:`Outcome` dict that the driver writes to the
store. Workers never touch the store.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from dropoutlab.config import RunConfig, config_hash

__all__ = [
    "DEFAULT_TASK",
    "FINAL_STATUSES",
    "TASK_STATUSES",
    "Job",
    "execute",
    "git_commit",
    "hardware_info",
    "resolve_task",
    "version_info",
]

DEFAULT_TASK = "dropoutlab.train:run_task"
# What a task may report; "failed" and "interrupted" are added by :func:`execute`.
TASK_STATUSES = ("done", "diverged")
# A run in one of these states is finished: a sweep skips it and never runs it again.
FINAL_STATUSES = ("done", "diverged")


@dataclass(frozen=True)
class Job:
    """One run of a sweep.

    Attributes:
        experiment: The experiment that asks for the run (``runs --experiment`` finds it).
        name: A human label within the experiment, e.g. ``"dropout p=0.5 seed=1"``.
        config: The fully resolved run config (seed included).
        task: ``"module:function"`` that trains it; part of the run's key.
    """

    experiment: str
    name: str
    config: RunConfig
    task: str = DEFAULT_TASK

    def __post_init__(self) -> None:
        if not isinstance(self.config, RunConfig):
            raise TypeError(
                f"`config` must be a RunConfig, got config={type(self.config).__name__}"
            )
        for field_name in ("experiment", "name"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"`{field_name}` must be a non-empty string, got {value!r}")
        module, sep, function = self.task.partition(":")
        if not sep or not module or not function:
            raise ValueError(f"`task` must look like 'module:function', got task={self.task!r}")

    @property
    def key(self) -> str:
        """The run's key in the store: the hash of its config and task."""
        return config_hash(self.config, extra={"task": self.task})


def resolve_task(task: str) -> Callable[..., Mapping[str, Any]]:
    """Import ``"module:function"`` and return the function."""
    module_name, _, function_name = task.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"`task` {task!r}: cannot import module {module_name!r}: {err}") from err
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"`task` {task!r}: module {module_name!r} has no function "
                         f"{function_name!r}")
    return function


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


@lru_cache(maxsize=1)
def version_info() -> dict[str, str | None]:
    """Versions of Python, torch, numpy and dropoutlab in this process."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "numpy", "dropoutlab"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@lru_cache(maxsize=1)
def hardware_info() -> dict[str, Any]:
    """CPU model, usable cores, and the CUDA device if any, of the machine running the job."""
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cores": usable_cores(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cuda": cuda,
    }


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding dropoutlab (or ``path``); ``None`` outside git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None
