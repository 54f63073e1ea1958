"""``dropoutlab info``: versions, threads and which dropout backend is in use."""

from __future__ import annotations

import argparse
import platform
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser("info", help="show versions, threads and the dropout backend")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one fixed-width line per fact."""
    import torch

    import dropoutlab
    from dropoutlab import allocator, backend, kernels

    facts = {
        "dropoutlab": dropoutlab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "threads": torch.get_num_threads(),
        "backend": backend.get_backend(),
        "native kernels": "available" if kernels.available() else "not available",
        "freed memory": allocator.describe(),
    }
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0
