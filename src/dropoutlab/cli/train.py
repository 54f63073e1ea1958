"""``dropoutlab train``: train one network the paper's way and write what it measured.

Config precedence: ``--preset`` (or the defaults), then ``--config FILE``, then the flags, then
``--set key=value`` (typed; an unknown key lists the valid ones); ``--data PATH`` trains on a
user's .npz/.csv/.parquet file. ``--out DIR`` (default: one folder per config under
``dropoutlab-runs/train/``) receives ``config.toml`` (resolved), ``result.json``,
``history.csv``, ``learning_curves.png`` (overfitting onset marked) and ``checkpoint.pt``;
``--resume`` continues from that checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from dropoutlab.atomic_io import atomic_write_text, make_output_dir
from dropoutlab.cli.arguments import (
    MAX_COUNT,
    MAX_SEED,
    MAX_THREADS,
    add_precision_argument,
    data_dir,
    device,
    input_file,
    int_range,
    non_empty,
    output_dir,
)
from dropoutlab.cli.data_options import add_data_arguments, data_changes, input_output
from dropoutlab.errors import ConfigError

# Input size and classes of each data set, to check an architecture like 784-1024-1024-10.
_DIMS = {"mnist": (784, 10), "fashion-mnist": (784, 10), "digits": (64, 10),
         "cifar10": (3072, 10), "cifar100": (3072, 100), "svhn": (3072, 10)}

# flag → dotted config key (argparse dest = flag without dashes, '-' → '_').
_FLAG_KEYS = {
    "dataset": "data.dataset", "data_dir": "data.data_dir", "train_size": "data.train_size",
    "merge_validation": "data.merge_validation", "model": "model.kind",
    "activation": "model.activation", "dropout_kind": "model.dropout",
    "drop_input": "model.drop_input", "drop_hidden": "model.drop_hidden",
    "scale": "model.scale", "init": "model.init", "max_norm": "optim.max_norm",
    "batch_size": "optim.batch_size", "lr": "optim.lr", "lr_schedule": "optim.lr_schedule",
    "lr_decay": "optim.lr_decay", "momentum": "optim.momentum_end",
    "momentum_start": "optim.momentum_start", "momentum_updates": "optim.momentum_updates",
    "epochs": "epochs", "seed": "seed", "device": "device",
    "early_stopping": "early_stopping", "precision": "precision",
}


def _optional_float(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train", help="train one dropout network and write its learning curves",
        description="Train one network with the paper's recipe (Srivastava et al. 2014, §5.1). "
        "--drop-* are DROP probabilities (the paper's retention p is 1 - drop).")
    p.add_argument("--preset", type=non_empty,
                   help="start from a named preset (see dropoutlab.presets)")
    p.add_argument("--config", type=input_file, help="TOML config file ([data], [model], [optim])")
    p.add_argument("--dataset", help="mnist, fashion-mnist, digits, cifar10, cifar100, svhn")
    p.add_argument("--data-dir", type=data_dir, help="folder with your copy of the data set")
    p.add_argument("--train-size", type=int_range(1, MAX_COUNT),
                   help="seeded stratified training subset size")
    p.add_argument("--merge-validation", action="store_true", default=None,
                   help="train on train+validation (the paper's final protocol)")
    p.add_argument("--model", help="mlp, convnet or autoencoder")
    p.add_argument("--arch", type=non_empty,
                   help="MLP layer sizes including input and output, e.g. "
                   "784-1024-1024-10 (autoencoder: 784-256-784)")
    p.add_argument("--activation", help="relu or logistic")
    p.add_argument("--dropout-kind", help="bernoulli, gaussian or none")
    p.add_argument("--drop-input", type=float, help="drop probability of the inputs")
    p.add_argument("--drop-hidden", type=float, help="drop probability of hidden units")
    p.add_argument("--scale", help="train (inverted dropout) or test (paper's weight scaling)")
    p.add_argument("--init", help="normal, xavier or kaiming")
    p.add_argument("--max-norm", type=_optional_float, default=argparse.SUPPRESS,
                   help="max-norm radius c, or 'none'")
    p.add_argument("--epochs", type=int_range(1, MAX_COUNT))
    p.add_argument("--batch-size", type=int_range(1, MAX_COUNT))
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--lr-schedule", help="constant, exponential or inverse_t")
    p.add_argument("--lr-decay", type=float, help="per-epoch factor, or t0 for inverse_t")
    p.add_argument("--momentum", type=float, help="final momentum of the ramp")
    p.add_argument("--momentum-start", type=float)
    p.add_argument("--momentum-updates", type=int_range(0, MAX_COUNT),
                   help="length of the momentum ramp")
    p.add_argument("--early-stopping", type=int_range(1, MAX_COUNT),
                   help="patience in epochs (val error)")
    p.add_argument("--seed", type=int_range(0, MAX_SEED))
    p.add_argument("--device", type=device, help="cpu or cuda[:N]")
    add_precision_argument(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.l2=1e-4 (repeatable)")
    add_data_arguments(p)
    p.add_argument("--out", type=output_dir, default=None,
                   help="output folder (default: a run folder under the results directory, "
                   "dropoutlab-runs/train/<data>-<config hash>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--threads", type=int_range(1, MAX_THREADS),
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    p.set_defaults(handler=run)


def resolve_config(args: argparse.Namespace) -> Any:
    """The run config from preset/file, flags and ``--set`` overrides, in that order."""
    from dropoutlab import config as cfg
    from dropoutlab.presets import get_preset

    if args.preset is not None and args.config is not None:
        raise ConfigError("give either --preset or --config, not both")
    if args.config is not None:
        base = cfg.load_config(args.config)
    else:
        base = get_preset(args.preset) if args.preset is not None else cfg.RunConfig()
    changes: dict[str, Any] = {}
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None or (dest == "max_norm" and hasattr(args, "max_norm")):
            changes[key] = value
    changes.update(data_changes(args))
    config = cfg.with_changes(base, changes)
    if args.arch is not None:
        config = cfg.with_changes(config, {"model.hidden": _hidden_from_arch(args.arch, config)})
    return cfg.apply_overrides(config, args.set)


def _hidden_from_arch(arch: str, config: Any) -> tuple[int, ...]:
    """Hidden widths from ``IN-H1-...-OUT``, checked against the data set's sizes."""
    try:
        sizes = [int(part) for part in arch.split("-")]
    except ValueError:
        sizes = []
    if len(sizes) < 3 or min(sizes) < 1:
        raise ConfigError(f"`--arch` must look like 784-1024-1024-10 (input-hidden...-output), "
                          f"got {arch!r}")
    n_in, n_classes = (input_output(config) if config.data.dataset == "file"
                       else _DIMS[config.data.dataset])
    n_out = n_in if config.model.kind == "autoencoder" else n_classes
    if (sizes[0], sizes[-1]) != (n_in, n_out):
        raise ConfigError(f"`--arch` {arch!r} must start with {n_in} and end with {n_out} for "
                          f"{config.data.dataset} ({config.model.kind})")
    return tuple(sizes[1:-1])


def write_outputs(result: Any, out: Path) -> None:
    """result.json, history.csv and learning_curves.png in ``out``, each written atomically
    (a unique temporary file and a rename: a symlink planted there is replaced, not followed)."""
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=1) + "\n",
                      what="`--out`")
    rows = result.history
    if rows:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "history.csv", buffer.getvalue(), what="`--out`")
    plot_learning_curves(result, out / "learning_curves.png")


def plot_learning_curves(result: Any, path: Path) -> None:
    """The run's learning curves (:mod:`dropoutlab.report.learning_curves`) into ``path``."""
    from dropoutlab.report.learning_curves import save_learning_curves

    save_learning_curves(
        result.history, path, onset=result.overfitting_onset,
        error_label="error %" if result.config.model.kind != "autoencoder" else "MSE / pixel",
        title=f"{result.config.data.dataset}: status {result.status}")


def _table(result: Any) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if math.isfinite(value) else str(value)
        return str(value)

    rows = [("status", result.status), ("test error %", result.test_error),
            ("validation error %", result.val_error), ("train error %", result.train_error),
            ("best epoch", result.best_epoch), ("overfitting onset", result.overfitting_onset),
            ("generalization gap", result.generalization_gap),
            ("diverged in epoch", result.diverged_epoch), ("epochs", result.epochs),
            ("seconds", result.seconds)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {fmt(value)}" for name, value in rows)


def default_out(config: Any) -> Path:
    """``<results directory>/train/<data name>-<config hash>``: one folder per config, so the
    same command finds its checkpoint again with ``--resume``."""
    from dropoutlab.config import config_hash
    from dropoutlab.sweeps.store import DEFAULT_STORE

    name = Path(config.data.path).stem if config.data.path else config.data.dataset
    return Path(DEFAULT_STORE).parent / "train" / f"{name}-{config_hash(config)}"


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, write the outputs and print the final numbers."""
    from dropoutlab.config import config_to_toml

    config = resolve_config(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    progress = not args.no_progress and sys.stderr.isatty()
    from dropoutlab.train import train

    out: Path = args.out if args.out is not None else default_out(config)

    def start() -> None:  # once the data loaded and any checkpoint was accepted
        make_output_dir(out, "`--out`")
        atomic_write_text(out / "config.toml", config_to_toml(config), what="`--out`")

    # Plain epoch lines on stderr when there is no progress bar; warnings always.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    library_log = logging.getLogger("dropoutlab")
    level_before = library_log.level
    library_log.addHandler(handler)
    library_log.setLevel(logging.WARNING if progress else logging.INFO)
    try:
        result = train(config, checkpoint_path=out / "checkpoint.pt", resume=args.resume,
                       progress=progress, on_start=start)
    finally:
        library_log.removeHandler(handler)
        library_log.setLevel(level_before)
    write_outputs(result, out)
    print(_table(result))
    print(f"outputs in {out}")
    return 0 if result.status == "done" else 1
