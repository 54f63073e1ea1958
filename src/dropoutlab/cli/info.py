"""``dropoutlab info``: versions, threads and which dropout backend is in use."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser("info", help="show versions, threads and the dropout backend")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one fixed-width line per fact."""
    import torch

    import dropoutlab
    from dropoutlab import allocator, backend, kernels, precision, provenance

    versions, hardware = provenance.version_info(), provenance.hardware_info()
    facts = {
        "dropoutlab": dropoutlab.__version__,
        "python": versions["python"],
        "torch": torch.__version__,
        "cpu": f"{hardware['cpu']}, {hardware['cores']} usable cores",
        "cuda": hardware["cuda"] or "not available",
        "threads": torch.get_num_threads(),
        "backend": backend.get_backend(),
        "native kernels": "available" if kernels.available() else "not available",
        "freed memory": allocator.describe(),
        "precision auto": _auto_precision(precision, "cuda" if hardware["cuda"] else "cpu"),
    }
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _auto_precision(precision: Any, device: str) -> str:
    """What ``precision = "auto"`` gives on ``device`` here, and why."""
    native, why = precision.bf16_support(device)
    return f"{'bf16' if native else 'fp32'} on {device} ({why})"
