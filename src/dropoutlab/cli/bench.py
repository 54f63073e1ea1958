"""``dropoutlab bench``: run ``benchmarks/bench_dropout.py`` of this source checkout.

The benchmarks live in ``benchmarks/`` beside the package and are never imported by it; this
command finds the suite (in the working directory, else in the checkout the package was
installed from in editable mode) and runs it in a fresh interpreter with the same flags.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from dropoutlab.cli.arguments import input_file, output_file
from dropoutlab.errors import DropoutlabError

SUITE = Path("benchmarks") / "bench_dropout.py"


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="time dropout ours vs torch (ops, memory, training step, MNIST epoch)"
    )
    parser.add_argument("--output", type=output_file, default=Path("BENCHMARKS.md"),
                        help="Markdown file to write the table to (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no file")
    parser.add_argument("--skip-mnist", action="store_true",
                        help="leave out the quick-MNIST epoch comparison")
    parser.add_argument("--skip-compile", action="store_true",
                        help="leave out the torch.compile part (benchmarks/bench_compile.py)")
    parser.add_argument("--peer", type=input_file, default=None,
                        help="path of the plain-PyTorch MNIST script "
                             "(default: benchmarks/mnist_plain_torch.py)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time single-threaded CPU time instead of wall time (a per-core "
                             "comparison that stays meaningful on a busy machine)")
    parser.set_defaults(handler=run)


def find_suite() -> Path:
    """``benchmarks/bench_dropout.py`` in the working directory or the package's checkout.

    Raises:
        DropoutlabError: neither has it (an installed wheel ships no benchmarks).
    """
    checkout = Path(__file__).resolve().parents[3]
    for root in (Path.cwd(), checkout):
        if (root / SUITE).is_file():
            return root / SUITE
    raise DropoutlabError(f"`dropoutlab bench` runs {SUITE} of a source checkout, but neither "
                          f"{str(Path.cwd())!r} nor {str(checkout)!r} has it; run it from the "
                          "checkout (or `make bench` there)")


def suite_arguments(args: argparse.Namespace) -> list[str]:
    """The parsed flags, spelled again for the suite's own parser."""
    argv = ["--output", str(args.output)]
    argv += ["--no-write"] if args.no_write else []
    argv += ["--skip-mnist"] if args.skip_mnist else []
    argv += ["--skip-compile"] if args.skip_compile else []
    argv += ["--peer", str(args.peer)] if args.peer is not None else []
    argv += ["--cpu-time"] if args.cpu_time else []
    return argv


def run(args: argparse.Namespace) -> int:
    """Run the suite with the same flags; its exit status is this command's."""
    return subprocess.run([sys.executable, str(find_suite()), *suite_arguments(args)],
                          check=False).returncode
