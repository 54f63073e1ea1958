"""The ``dropoutlab`` command line: argument parsing and printing only.

Each subcommand lives in its own module under :mod:`dropoutlab.cli` with two functions:
``register(subparsers)`` adds its parser (and sets ``handler``), and the handler does the work,
importing heavy modules only when it runs. Errors caused by the user (bad values, missing data,
unusable stores) print one line and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dropoutlab.allocator import keep_freed_memory
from dropoutlab.atomic_io import describe_os_error
from dropoutlab.errors import DropoutlabError

# One module per subcommand, in the order `dropoutlab --help` lists them.
COMMAND_MODULES = (
    "dropoutlab.cli.info",
    "dropoutlab.cli.train",
    "dropoutlab.cli.list_cmd",
    "dropoutlab.cli.reproduce",
    "dropoutlab.cli.report",
    "dropoutlab.cli.sweep",
    "dropoutlab.cli.tune",
    "dropoutlab.cli.runs",
    "dropoutlab.cli.export",
    "dropoutlab.cli.bench",
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(DropoutlabError):
    """A command-line value is invalid; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2 (argparse's own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the full ``dropoutlab`` parser with every subcommand registered."""
    parser = _Parser(
        prog="dropoutlab",
        description="Dropout done right: layers, the paper's experiments, sweeps "
        "(Srivastava et al., JMLR 2014). p is the DROP probability; the paper's p is retention.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropoutlab`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        keep_freed_memory()
        status = args.handler(args)
    except KeyboardInterrupt:
        print("dropoutlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DropoutlabError, ValueError, TypeError, FileNotFoundError, PermissionError) as err:
        print(f"dropoutlab {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a full disk or read-only media the command's own checks missed
        where = f" {err.filename!r}" if err.filename else ""
        print(f"dropoutlab {args.command}: error: cannot use{where}: {describe_os_error(err)}; "
              "free space or pass paths on writable media", file=sys.stderr)
        return EXIT_USAGE
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
