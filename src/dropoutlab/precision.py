"""Training precision: fp32, or bf16 mixed precision where the hardware multiplies bf16 natively.

bf16 mixed precision runs the matrix products and activations in bfloat16 while the master
weights, momentum buffers, the max-norm projection (§5.1), the loss and the evaluation metrics
stay float32. ``"auto"`` is resolved once, before a config is hashed, so a stored run always
says which precision it trained in: bf16 where the CPU has ``avx512_bf16`` or ``amx_bf16`` (or
the CUDA device has compute capability 8.0 or more), fp32 elsewhere, because bf16 emulated in
software is slower than fp32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "CPU_BF16_FLAGS",
    "PRECISIONS",
    "autocast",
    "bf16_support",
    "cpu_flags",
    "resolve_precision",
]

PRECISIONS = ("fp32", "bf16", "auto")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 dot products (x86)


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (the first ``flags`` line of ``/proc/cpuinfo``); empty where
    the file is missing (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_support(device: str = "cpu", *, cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether ``device`` multiplies bf16 natively, and why (one line for ``dropoutlab info``).

    Args:
        device: ``"cpu"`` or ``"cuda[:N]"``.
        cpuinfo: The text of ``/proc/cpuinfo`` (read from the machine when ``None``).
    """
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        index = int(device.partition(":")[2] or 0)
        major, minor = torch.cuda.get_device_capability(index)
        ok = (major, minor) >= (8, 0)
        return ok, f"compute capability {major}.{minor} ({'≥' if ok else '<'} 8.0)"
    found = sorted(cpu_flags(cpuinfo) & set(CPU_BF16_FLAGS))
    if found:
        return True, f"CPU flags {', '.join(found)}"
    return False, f"no CPU flag {' or '.join(CPU_BF16_FLAGS)}"


def resolve_precision(precision: str, device: str = "cpu", *,
                      cpuinfo: str | None = None) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or what ``"auto"`` gives on ``device``.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got precision={precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if bf16_support(device, cpuinfo=cpuinfo)[0] else "fp32"


def autocast(precision: str,
             device: str | torch.device) -> contextlib.AbstractContextManager[object]:
    """The context a forward pass runs in: torch's bf16 autocast for ``"bf16"`` (the products
    and activations in bf16, the float32 parameters untouched), nothing for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"`precision` must be 'fp32' or 'bf16' (auto is resolved in the "
                         f"config), got precision={precision!r}")
    import torch

    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
