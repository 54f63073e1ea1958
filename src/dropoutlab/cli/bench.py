"""``dropoutlab bench``: the dropout benchmark suite, printed and written to BENCHMARKS.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="time dropout ours vs torch (ops, memory, training step, MNIST epoch)"
    )
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                        help="Markdown file to write the table to (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no file")
    parser.add_argument("--skip-mnist", action="store_true",
                        help="leave out the quick-MNIST epoch comparison")
    parser.add_argument("--peer", type=Path, default=None,
                        help="path of the plain-PyTorch MNIST script "
                             "(default: benchmarks/mnist_plain_torch.py)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time single-threaded CPU time instead of wall time (a per-core "
                             "comparison that stays meaningful on a busy machine)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the suite, print the table, write it unless --no-write."""
    from dropoutlab.kernels import bench

    def progress(message: str) -> None:
        print(f"… {message}", file=sys.stderr, flush=True)

    report = bench.run(mnist=not args.skip_mnist, peer=args.peer, cpu_time=args.cpu_time,
                       progress=progress)
    print(report, end="")
    if not args.no_write:
        args.output.write_text(report, encoding="utf-8")
        print(f"written to {args.output}", file=sys.stderr)
    return 0
