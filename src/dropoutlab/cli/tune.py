"""``dropoutlab tune``: whether dropout helps on your data, and at which p (§7.3, Appendix A).

Example::

    dropoutlab tune --data mytable.csv --target label --standardize --time 20m
    dropoutlab tune --dataset fashion-mnist --arch 784-512-512-10 --time 20m

Searches the paper's grid (baseline, hidden retention 0.4–0.8, input retention 0.8/1.0,
max-norm 2/3/4, a raised learning rate; successive halving; several seeds) on the sweep engine
within ``--time``, then prints the diagnosis and the recommendation and writes the report and
``recommended.toml`` (:mod:`dropoutlab.tune`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from dropoutlab.cli.data_options import add_data_arguments, data_changes, input_output
from dropoutlab.cli.sweep_options import add_sweep_arguments, show_log_lines, sweep_options
from dropoutlab.errors import ConfigError


def _retentions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated retentions like "
                                         f"0.5,0.8, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``tune`` subcommand."""
    p = subparsers.add_parser(
        "tune", help="find whether dropout helps on your data, and at which p",
        description="Search the paper's procedure (Srivastava et al. 2014, §7.3, Appendix A) "
        "within a wall-time budget: a baseline without dropout, hidden retention 0.4-0.8, "
        "input retention 0.8/1.0, max-norm 2/3/4, a raised learning rate, several seeds, "
        "chosen by mean validation error. Retentions are the paper's p (drop = 1 - p).")
    p.add_argument("--time", default="20m", metavar="DURATION",
                   help="wall time to spend, e.g. 20m, 90s, 1h30m (default: 20m)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="base config (TOML); default: the built-in defaults")
    p.add_argument("--dataset", default=None,
                   help="a built-in data set: mnist, fashion-mnist, digits, cifar10, ...")
    p.add_argument("--data-dir", default=None, help="folder with your copy of --dataset")
    add_data_arguments(p)
    p.add_argument("--arch", default=None,
                   help="MLP sizes including input and output, e.g. 784-512-512-10")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="most epochs of the final rung (default: the config's)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the dropout nets (default: the config's); the "
                   "baseline also tries lr / --lr-raise")
    p.add_argument("--lr-raise", type=float, default=3.0,
                   help="how much larger the dropout nets' rate is than a standard one "
                   "(default: 3)")
    p.add_argument("--retain-hidden", type=_retentions, default=None, metavar="P,P,...",
                   help="hidden retentions to try (default: 0.4,0.5,0.6,0.7,0.8)")
    p.add_argument("--retain-input", type=_retentions, default=None, metavar="P,P",
                   help="input retentions to try (default: 0.8,1.0)")
    p.add_argument("--max-norms", type=_retentions, default=None, metavar="C,C,...",
                   help="max-norm radii to try (default: 2,3,4)")
    p.add_argument("--scale-width", action="store_true",
                   help="widths n/p for the dropout nets (the paper's n/p rule)")
    p.add_argument("--seeds", type=_positive_int, default=3,
                   help="seeds of the finalists and the baseline (default: 3)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   dest="overrides", help="override a config key (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default: <store folder>/tune/<data name>)")
    add_sweep_arguments(p)
    p.set_defaults(handler=run)


def base_config(args: argparse.Namespace) -> Any:
    """The config the search starts from: file or defaults, data flags, --arch, --set."""
    from dropoutlab.config import RunConfig, apply_overrides, load_config, with_changes

    base = load_config(args.config) if args.config else RunConfig()
    changes: dict[str, Any] = data_changes(args)
    if args.dataset:
        changes["data.dataset"] = args.dataset
    if args.data_dir:
        changes["data.data_dir"] = args.data_dir
    if args.lr is not None:
        changes["optim.lr"] = args.lr
    if args.device:
        changes["device"] = args.device
    config = with_changes(base, changes)
    config = apply_overrides(config, args.overrides)
    if args.arch:
        try:
            sizes = [int(part) for part in args.arch.split("-")]
        except ValueError:
            sizes = []
        if len(sizes) < 3 or min(sizes) < 1:
            raise ConfigError(f"`--arch` must look like 784-512-512-10 (input-hidden...-"
                              f"output), got {args.arch!r}")
        n_in, n_out = input_output(config)
        if (sizes[0], sizes[-1]) != (n_in, n_out):
            raise ConfigError(f"`--arch` {args.arch!r} must start with {n_in} and end with "
                              f"{n_out} for this data")
        config = with_changes(config, {"model.hidden": tuple(sizes[1:-1])})
    return config


def run(args: argparse.Namespace) -> int:
    """Run the search, print the diagnosis and recommendation, and the report's path."""
    from dropoutlab.tune import TuneSpace, parse_time, tune

    budget = parse_time(args.time)
    defaults = TuneSpace()
    space = TuneSpace(retain_hidden=args.retain_hidden or defaults.retain_hidden,
                      retain_input=args.retain_input or defaults.retain_input,
                      max_norms=args.max_norms or defaults.max_norms,
                      lr_raise=args.lr_raise, scale_width=args.scale_width, seeds=args.seeds)
    base = base_config(args)
    show_log_lines()
    result = tune(base, time_budget=budget, space=space, max_epochs=args.epochs,
                  sweep=sweep_options(args), out_dir=args.out,
                  command=shlex.join(["dropoutlab", *sys.argv[1:]]),
                  echo=lambda line: print(line, flush=True))
    print()
    for line in result.covered:
        print(f"covered: {line}")
    print(f"diagnosis: {result.diagnosis}")
    assert result.recommended is not None
    print(f"recommended: {result.recommended.label}, {result.epochs} epochs")
    for name, value in result.test.items():
        if name == "baseline" and result.baseline == result.recommended:
            continue  # the recommendation is the baseline: one number
        print(f"test error ({name}, measured once after the choice): {value} %")
    if not result.test:
        print("test error: not measured (the data has no test split)")
    print(f"config: {result.config_path}  (dropoutlab train --config {result.config_path})")
    print(f"report: {result.report.resolve() if result.report else '-'}")
    return 0
