"""Conv nets on CIFAR-10, CIFAR-100 and SVHN: no dropout, dropout in fc layers, everywhere
(§6.1.2, Tables 3 and 4).

The paper's conv nets have three 5×5 conv layers with max pooling and two fully connected
layers, ReLU, max-norm in all layers, and retention (0.9, 0.75, 0.75, 0.5, 0.5, 0.5) from the
input to the top. Three variants per data set: no dropout; dropout in the fully connected
layers only; dropout in all layers. The data are the user's own copies (``--data-dir``); the
experiment runs on every one of CIFAR-10, CIFAR-100 and SVHN it finds there, and ``all`` skips
it with the reason when there is none.

Below the paper budget the filter counts and fc widths are divided (quick: 16-16-32 filters,
2 × 128 fc units, a 10k-example subset, 12 epochs), and the paper budget's optimiser settings
for conv nets (lr 0.05 decaying 1 % per epoch, momentum 0.5 → 0.95, standardized inputs) are
our choice: shared/paper.md does not give them.

Rules: "dropout in all layers beats dropout in fc layers beats no dropout" on mean test error,
per data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.errors import DataError
from dropoutlab.experiments.base import GridExperiment
from dropoutlab.experiments.common import (
    base_config,
    config_value,
    diff_cell,
    drop_from_retain,
    finished,
    group_by,
    label_of,
    metric_stat,
    new_figure,
    ordering_finding,
    ours_cell,
    status_note,
)
from dropoutlab.experiments.paper_numbers import TABLE4
from dropoutlab.report.content import Analysis, Figure, Table

__all__ = ["EXPERIMENT", "ConvNets", "find_datasets"]

DATASETS = ("cifar10", "cifar100", "svhn")
VARIANTS = ("no dropout", "dropout in fc layers", "dropout in all layers")
RETAIN_ALL = (0.9, 0.75, 0.75, 0.5, 0.5, 0.5)  # input, conv1, conv2, conv3, fc1, fc2 (§6.1.2)

_SCALE: dict[str, dict[str, Any]] = {
    "smoke": {"model.conv_channels": (4, 4, 8), "model.conv_fc": (16, 16), "epochs": 1,
              "data.train_size": None},
    "quick": {"model.conv_channels": (16, 16, 32), "model.conv_fc": (128, 128), "epochs": 12,
              "data.train_size": 10_000},
    "paper": {"model.conv_channels": (96, 128, 256), "model.conv_fc": (2048, 2048),
              "epochs": 300, "data.train_size": None},
}


def find_datasets(data_dir: str | None) -> list[str]:
    """The conv-net data sets whose files are in ``data_dir`` (looked up as the loaders do)."""
    if data_dir is None:
        return []
    from dropoutlab.data import sources

    directory = Path(data_dir)
    found = []
    for name in ("cifar10", "cifar100"):
        try:
            sources._cifar_files(directory, name)  # the loader's own lookup of the files
        except DataError:
            continue
        found.append(name)
    if (directory / "train_32x32.mat").is_file() and (directory / "test_32x32.mat").is_file():
        found.append("svhn")
    return found


def variant_config(base: RunConfig, variant: str) -> RunConfig:
    """``base`` with the dropout of ``variant`` (drop probabilities from the paper's retention)."""
    drops = tuple(drop_from_retain(p) for p in RETAIN_ALL)
    if variant == "no dropout":
        return with_changes(base, {"model.dropout": "none", "model.conv_drop": (0.0,) * 6})
    if variant == "dropout in fc layers":
        drops = (0.0, 0.0, 0.0, 0.0, *drops[4:])
    return with_changes(base, {"model.dropout": "bernoulli", "model.conv_drop": drops})


class ConvNets(GridExperiment):
    """Tables 3–4: conv nets with no dropout, dropout in fc layers, dropout in all layers."""

    name = "conv-nets"
    title = "Conv nets on CIFAR-10/100 and SVHN"
    paper_ref = "Tables 3, 4"
    summary = "conv net on CIFAR-10/100 or SVHN from --data-dir: no / fc-only / all-layer dropout"
    datasets: tuple[str, ...] = DATASETS

    def missing_data(self, data_dir: str | None) -> str | None:
        """Why the experiment cannot run with ``data_dir``, or None when a data set is there."""
        if data_dir is None:
            return ("needs --data-dir with CIFAR-10, CIFAR-100 (binary or python batches) or "
                    "SVHN (train_32x32.mat, test_32x32.mat)")
        if not find_datasets(data_dir):
            return (f"no CIFAR-10, CIFAR-100 or SVHN files in {data_dir!r} (looked for "
                    "test_batch(.bin), test(.bin) and train_32x32.mat/test_32x32.mat)")
        return None

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """Three variants × every data set found in ``data_dir``.

        Raises:
            DataError: no data set in ``data_dir`` (the message says what to pass).
        """
        reason = self.missing_data(data_dir)
        if reason is not None:
            raise DataError(f"conv-nets {reason}")
        base = with_changes(base_config(budget), {
            **_SCALE[budget], "model.kind": "convnet", "data.data_dir": data_dir,
            "data.standardize": True, "model.init": "kaiming", "optim.max_norm": 4.0,
        })
        if budget == "paper":
            base = with_changes(base, {"optim.lr": 0.05, "optim.lr_schedule": "exponential",
                                       "optim.lr_decay": 0.99, "optim.momentum_end": 0.95,
                                       "optim.momentum_updates": 10_000})
        elif budget == "quick":
            base = with_changes(base, {"optim.lr": 0.05})
        return {f"{dataset} {variant}":
                variant_config(with_changes(base, {"data.dataset": dataset}), variant)
                for dataset in find_datasets(data_dir) for variant in VARIANTS}

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Tables 3–4 beside the paper, per data set, with the ordering finding."""
        analysis = Analysis(self.name, self.title, self.paper_ref)
        runs = finished(records)
        by_dataset = group_by(runs, lambda r: config_value(r, "data.dataset"))
        rows = []
        fig, ax = new_figure(width=6.0)
        for i, (dataset, group) in enumerate(sorted(by_dataset.items())):
            by_variant: dict[str, list[Any]] = {}
            for record in group:
                if (variant := self._variant(record, dataset)) is not None:
                    by_variant.setdefault(variant, []).append(record)
            stats = {v: metric_stat(by_variant.get(v, []), "test_error") for v in VARIANTS}
            for variant in VARIANTS:
                paper = TABLE4.get((dataset, variant))
                rows.append([dataset, variant, ours_cell(stats[variant]), paper,
                             diff_cell(stats[variant], paper)])
            xs = [i + 0.25 * (j - 1) for j in range(len(VARIANTS))]
            ax.bar(xs, [stats[v].mean for v in VARIANTS], width=0.22,
                   yerr=[stats[v].std for v in VARIANTS],
                   color=["tab:gray", "tab:orange", "tab:blue"])
            analysis.findings.append(ordering_finding(
                f"{dataset}: dropout in all layers < dropout in fc layers < no dropout",
                [(v, stats[v]) for v in reversed(VARIANTS)]))
        ax.set_xticks(range(len(by_dataset)), sorted(by_dataset))
        ax.set(ylabel="test error %", title="grey: no dropout, orange: fc only, blue: all")
        analysis.tables.append(Table(
            "table3_4", "Conv net test error %", ["data set", "variant",
                                                  "ours (mean ± std, n)", "paper", "difference"],
            rows, "Paper: Table 3 (SVHN) and Table 4 (CIFAR-10/100)."))
        if by_dataset:
            analysis.figures.append(Figure("tables3_4", "Conv nets: where to put dropout", fig,
                                           "Mean ± std over seeds."))
            cfg = runs[0].config
            analysis.notes.append(
                f"filters {cfg['model']['conv_channels']}, fc {cfg['model']['conv_fc']} (paper: "
                f"96-128-256 (?), 2048-2048 (?)); train_size={cfg['data']['train_size']}, "
                f"{cfg['epochs']} epochs; standardized inputs; max-norm c = 4 in all layers")
        if (note := status_note(records)) is not None:
            analysis.notes.append(note)
        return analysis

    def _variant(self, record: Any, dataset: str) -> str | None:
        label = label_of(record, self.name)
        if label is None or not label.startswith(dataset + " "):
            return None
        variant = label[len(dataset) + 1:]
        return variant if variant in VARIANTS else None


EXPERIMENT = ConvNets()
