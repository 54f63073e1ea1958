"""Where a result came from: software versions, hardware, the git commit, usable cores.

One home for every caller that records or prints provenance: each stored run (the sweep's
workers), ``dropoutlab info``, the report's header and the benchmarks.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "DEVICE_PATTERN",
    "check_device",
    "cpu_model",
    "git_commit",
    "git_describe",
    "hardware_info",
    "usable_cores",
    "version_info",
]


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
        "cpu": cpu_model(),
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(args: list[str], where: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding dropoutlab (or ``path``); ``None`` outside git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    return _git(["rev-parse", "HEAD"], where) or None


def git_describe() -> str:
    """The checked-out commit of dropoutlab, with ``-dirty`` when tracked files changed.

    Returns ``"unknown"`` outside a git checkout (e.g. an installed wheel).
    """
    commit = git_commit()
    if commit is None:
        return "unknown"
    where = Path(__file__).resolve().parent
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return f"{commit}-dirty" if dirty else commit


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device: str, what: str = "`--device`") -> None:
    """Refuse a device name torch would reject, or a CUDA device this machine does not have.

    Every command and :func:`dropoutlab.train.train` call it before any work starts, so a bad
    device is one clear line instead of a torch ``AssertionError``/``RuntimeError``.

    Raises:
        ValueError: ``device`` is not ``cpu``, ``cuda`` or ``cuda:N``, or names a CUDA device
            that is absent.
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"{what} must be cpu, cuda or cuda:N (N a GPU index), got "
                          f"{device!r}; pass e.g. --device cpu")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"{what} {device}: CUDA is not available on this machine (torch "
                          f"{torch.__version__}); use --device cpu")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{what} must name one of the {count} CUDA devices (cuda:0 .. "
                          f"cuda:{count - 1}), got {device!r}; pass a GPU index below {count}")
