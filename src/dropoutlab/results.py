"""What one training run produced: :class:`RunResult`, and its under/overfitting diagnosis.

The paper reads under- and overfitting off training and held-out errors (Srivastava et al.
2014, Figure 9: a small retention p underfits — training error stays high — and p → 1
overfits — test error rises while training error keeps falling). :func:`diagnose` puts the
learning curves of one run into numbers:

* ``best_epoch``: the epoch (1-based) with the lowest validation error (ties: the earliest).
* ``overfitting_onset``: the first epoch after the validation-*loss* minimum, provided the loss
  stays more than 1% above that minimum in every later epoch (at least two of them), else
  None: a noisy bump is not overfitting, a lasting rise is.

:func:`generalization_gap` is the final validation (or, without validation, test) error minus
the final training error: large when the network overfits, near zero (or negative, with
dropout on during training) when it underfits.

:mod:`dropoutlab.train` builds these; it re-exports :class:`RunResult` and :func:`diagnose`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from dropoutlab.config import RunConfig

__all__ = ["RunResult", "diagnose", "generalization_gap"]

_RISE_TOLERANCE = 0.01  # relative rise of validation loss that counts as overfitting
_RISE_EPOCHS = 2  # ... sustained for at least this many epochs after the minimum


@dataclass
class RunResult:
    """What one training run produced (the config is an input; everything else is measured).

    Attributes:
        config: The resolved run config.
        status: ``"done"`` or ``"diverged"`` (non-finite loss, or a loss far above chance).
            :func:`train` raises ``KeyboardInterrupt`` when stopped, so ``"interrupted"`` is
            only written by callers that record a stopped run (its checkpoint holds the
            partial history).
        test_error, val_error, train_error: Final errors in percent (reconstruction MSE for the
            autoencoder) of the weight-scaled network; ``val_error`` is None without a
            validation split; all are None when the run diverged.
        best_epoch: Epoch (1-based) with the lowest validation error, None without validation.
        overfitting_onset: First epoch of a lasting rise of the validation loss, or None.
        generalization_gap: Final validation (else test) error minus final training error.
        diverged_epoch: Epoch (1-based) in which the loss became non-finite or the run met
            :mod:`dropoutlab.train`'s far-above-chance rule, else None.
        epochs: Epochs completed.
        seconds: Wall-clock seconds of training and evaluation (summed over resumed pieces).
        history: One dict per completed epoch (see :mod:`dropoutlab.train`).
        model: The trained model, only with ``keep_model=True``; never serialised.
    """

    config: RunConfig
    status: str
    test_error: float | None
    val_error: float | None
    train_error: float | None
    best_epoch: int | None
    overfitting_onset: int | None
    generalization_gap: float | None
    diverged_epoch: int | None
    epochs: int
    seconds: float
    history: list[dict[str, float | int | None]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of everything but the model."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        out["config"] = self.config.to_dict()
        out["history"] = [dict(row) for row in self.history]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """Rebuild a result from :meth:`to_dict` output (without a model)."""
        values: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls) if f.name != "model"}
        values["config"] = RunConfig.from_dict(d["config"])
        values["history"] = [dict(row) for row in d.get("history", [])]
        return cls(**values)

    def metrics(self) -> dict[str, Any]:
        """The final numbers, as ``run_task`` returns them."""
        keys = ("test_error", "val_error", "train_error", "best_epoch", "overfitting_onset",
                "generalization_gap", "diverged_epoch", "epochs", "seconds")
        return {key: getattr(self, key) for key in keys}


def diagnose(history: list[dict[str, Any]]) -> dict[str, int | None]:
    """Best epoch and overfitting onset from a history (the onset rule: module docstring)."""
    rows = [r for r in history if r.get("val_loss") is not None
            and math.isfinite(float(r["val_loss"]))]
    if not rows:
        return {"best_epoch": None, "overfitting_onset": None}
    best = min(rows, key=lambda r: (r["val_error"], r["epoch"]))
    low = min(rows, key=lambda r: (r["val_loss"], r["epoch"]))
    after = [float(r["val_loss"]) for r in rows if r["epoch"] > low["epoch"]]
    bar = (1.0 + _RISE_TOLERANCE) * float(low["val_loss"])
    onset = None
    if len(after) >= _RISE_EPOCHS and all(loss > bar for loss in after):
        onset = int(low["epoch"]) + 1
    return {"best_epoch": int(best["epoch"]), "overfitting_onset": onset}


def generalization_gap(val_error: float | None, test_error: float | None,
                       train_error: float | None) -> float | None:
    """Final validation (else test) error minus final training error; None when unknown."""
    reference = val_error if val_error is not None else test_error
    if reference is None or train_error is None:
        return None
    return reference - train_error
