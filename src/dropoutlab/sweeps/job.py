"""The unit of a sweep: a :class:`Job`, the task that trains it, and the run statuses.

The paper's results are grids (retention × size × regularizer × seed, Srivastava et al. 2014,
§6–§7); each cell is one job. A job names its task as a ``"module:function"`` path so any worker
(a local pool process or a Ray worker on another machine) can import it. A task has the
signature ``fn(config, *, checkpoint_path=None, resume=False) -> dict`` and returns
``{"status": ..., "metrics": {...}, "history": [...], "extras": {...}}``. The task is part of
the run's key, so its string never changes for stored runs to stay recognised.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dropoutlab.config import RunConfig, config_hash

__all__ = [
    "DEFAULT_TASK",
    "Job",
    "resolve_task",
]

DEFAULT_TASK = "dropoutlab.train:run_task"


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


