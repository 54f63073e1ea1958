"""``train(config) -> RunResult``: the one training loop every experiment and sweep calls.

It trains one network the paper's way (§5.1, Appendix A; :mod:`dropoutlab.recipe`): data held
as tensors on the device and shuffled with a seeded ``randperm`` (no DataLoader), mini-batch SGD
with the momentum ramp and learning-rate schedule, max-norm after every update, and evaluation
of the weight-scaled network (``model.eval()``, §4) on validation and test after every epoch.

Randomness: three ``torch.Generator``s derived from ``config.seed`` (:func:`make_generators`)
draw the initial weights, the data order and the dropout masks; the global RNG is never used.
The same seed on the same machine gives the same history (apart from timings), and a run
resumed from a checkpoint ends bitwise identical to an uninterrupted one.

History (one dict per epoch): ``train_loss``/``train_error`` are running means over the epoch's
mini-batches *with dropout on* (free to compute); ``val_*`` and ``test_*`` are the weight-scaled
network at the end of the epoch. The result's ``train_error`` is the weight-scaled network on
the whole training split at the end. Errors are percentages for classifiers; for the
autoencoder every ``*_error`` is the mean squared reconstruction error per pixel, like its loss.

Divergence: a run is stopped and marked ``diverged`` when its loss becomes non-finite, or when
its mean training loss stays above :data:`DIVERGENCE_FACTOR` × the chance loss for
:data:`DIVERGENCE_EPOCHS` epochs in a row (every epoch, in a shorter run). The chance loss is
what a net that has learnt nothing scores: ln(classes) for a classifier (uniform outputs), and
the mean squared pixel value for the autoencoder (outputs of zero). A healthy run is far below
it after its first epoch; one with a rate far too large stays orders of magnitude above it.

The result (:class:`~dropoutlab.results.RunResult`) and its under/overfitting diagnosis
(:func:`~dropoutlab.results.diagnose`: best epoch, overfitting onset, generalization gap) live in
:mod:`dropoutlab.results`; both are re-exported here.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dropoutlab import data as data_module
from dropoutlab import recipe
from dropoutlab.bf16_weights import BF16Weights
from dropoutlab.checkpoint import CheckpointError, StopRequest, load_checkpoint, save_checkpoint
from dropoutlab.config import RunConfig, config_hash
from dropoutlab.models import build_model, set_dropout_generator
from dropoutlab.precision import autocast
from dropoutlab.provenance import check_device
from dropoutlab.results import RunResult, diagnose, generalization_gap

__all__ = ["RunResult", "diagnose", "evaluate", "make_generators", "report_epoch", "run_task",
           "set_epoch_listener", "train"]

log = logging.getLogger(__name__)

_EVAL_BATCH = 8192  # rows per evaluation pass: big batches, bounded memory
DIVERGENCE_FACTOR = 10.0  # a training loss this many times the chance loss is not learning
DIVERGENCE_EPOCHS = 3  # ... for this many epochs in a row: a bad start recovers sooner

# -- epoch hook (for the sweep engine's progress; one listener per process) ---------------------
EpochListener = Callable[[int, int], None]
_epoch_listener: EpochListener | None = None


def set_epoch_listener(listener: EpochListener | None) -> EpochListener | None:
    """Install ``listener(epochs_done, total_epochs)`` for this process; returns the previous one.

    :func:`train` calls it once when training starts (``epochs_done`` > 0 after a resume) and
    after every completed epoch, with ``total_epochs = config.epochs``. The sweep engine's pool
    workers install one that forwards the counts to the driver's progress display; ``None``
    removes it. The listener runs in the training thread, so it must be quick.
    """
    global _epoch_listener
    previous, _epoch_listener = _epoch_listener, listener
    return previous


def report_epoch(epochs_done: int, total_epochs: int) -> None:
    """Tell the process's epoch listener (if any) how far training is.

    :func:`train` calls this itself; a custom sweep task that trains in its own loop may call
    it too so its progress shows. A failing listener is logged and ignored: progress display
    never fails a run.
    """
    listener = _epoch_listener
    if listener is None:
        return
    try:
        listener(epochs_done, total_epochs)
    except Exception:  # progress is cosmetic; the run must go on
        log.debug("epoch listener failed", exc_info=True)


def make_generators(seed: int, device: str | torch.device = "cpu") -> dict[str, torch.Generator]:
    """Independent generators for ``"init"`` (CPU), ``"order"`` and ``"dropout"`` (on ``device``).

    Their seeds are three words of numpy's ``SeedSequence(seed)``, so they are unrelated streams
    even for neighbouring run seeds.
    """
    words = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    devices = {"init": torch.device("cpu"), "order": torch.device(device),
               "dropout": torch.device(device)}
    return {name: torch.Generator(device=dev).manual_seed(int(word))
            for (name, dev), word in zip(devices.items(), words, strict=True)}


def _is_autoencoder(config: RunConfig) -> bool:
    return config.model.kind == "autoencoder"


def _loss_and_wrong(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    reconstruct: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss of a batch and its error count (summed squared error per pixel for the AE).

    Both are computed in float32 whatever the precision of ``out`` (bf16 under autocast).
    """
    out = out.float()
    if reconstruct:
        sq = (out - x).pow(2)
        return sq.mean(), sq.detach().mean(dim=1).sum()
    return F.cross_entropy(out, y), (out.detach().argmax(dim=1) != y).sum()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             reconstruct: bool = False, batch_size: int = _EVAL_BATCH,
             precision: str = "fp32") -> tuple[float, float]:
    """Loss and error of the weight-scaled network (evaluation mode) on ``(x, y)``.

    ``precision`` is the forward pass's (:func:`dropoutlab.precision.autocast`); the loss and
    error are summed in float64 either way.

    Returns:
        ``(mean loss, error)``: error in percent for classifiers, mean squared error per pixel
        for reconstruction. ``(nan, nan)`` for an empty split.
    """
    if len(x) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    wrong = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with autocast(precision, x.device):
            out = model(xb)
        loss, bad = _loss_and_wrong(out, xb, yb, reconstruct)
        loss_sum += loss.double() * len(xb)
        wrong += bad.double()
    model.train(was_training)
    scale = 1.0 if reconstruct else 100.0
    return loss_sum.item() / len(x), scale * wrong.item() / len(x)


def _weight_norms(model: nn.Module) -> tuple[float, float]:
    """Largest and mean incoming-weight norm over all units of Linear/Conv layers."""
    norms = [m.weight.detach().flatten(1).norm(dim=1) for m in model.modules()
             if isinstance(m, nn.Linear | nn.Conv2d)]
    joined = torch.cat(norms)
    return float(joined.max()), float(joined.mean())


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


class _Bar:
    """A rich progress bar on stderr, or nothing (epochs are then logged as plain lines)."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int) -> None:
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=False)
            self.progress.start()
            self.task = self.progress.add_task("training", total=total_steps,
                                               completed=done_steps)

    def advance(self, steps: int, description: str | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=steps, description=description)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def train(config: RunConfig, *, checkpoint_path: str | Path | None = None, resume: bool = False,
          progress: bool | None = None, keep_model: bool = False,
          on_start: Callable[[], None] | None = None) -> RunResult:
    """Train the network ``config`` describes and measure it (see the module docstring).

    Args:
        config: The resolved run config.
        checkpoint_path: Where to write checkpoints (every ``config.checkpoint_every`` epochs,
            at the end, and on SIGINT/SIGTERM); None writes none.
        resume: Continue from ``checkpoint_path`` if it exists (else start afresh).
        progress: Show a progress bar on stderr; None shows one when stderr is a terminal.
        keep_model: Put the trained model on the result.
        on_start: Called once the data is loaded and any checkpoint accepted, before the
            first update; the CLI writes its files there, so a refused run writes nothing.

    Returns:
        The :class:`RunResult`.

    Raises:
        KeyboardInterrupt: on SIGINT/SIGTERM, after writing a checkpoint (if a path is given).
        DataError: missing or corrupt data, or a checkpoint of another run.
        CheckpointError: a checkpoint that is unreadable, of another config, or that does not
            fit this run (missing fields, tensors of the wrong shape).
        ValueError: ``config.device`` is absent on this machine.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    check_device(config.device, "`device`")
    loop = TrainingLoop(config)
    state = None
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path)
        if state.get("config_hash") != config_hash(config):
            raise CheckpointError(
                f"checkpoint {str(checkpoint_path)!r} belongs to another config (hash "
                f"{state.get('config_hash')}, this run is {config_hash(config)}); use another "
                "path or drop --resume"
            )
        try:
            loop.restore(state, checkpoint_path)
        except (RuntimeError, ValueError, TypeError, KeyError) as err:  # torch's own checks
            raise CheckpointError(
                f"checkpoint {str(checkpoint_path)!r} does not fit this run ({type(err).__name__}"
                f": {str(err).splitlines()[0] if str(err) else ''}); delete it (or drop "
                "--resume) to start the run afresh") from None
        log.info("resuming from %s at epoch %d", checkpoint_path, loop.epoch)
    if on_start is not None:
        on_start()
    bar = _Bar(progress, config.epochs * loop.batches_per_epoch,
               loop.epoch * loop.batches_per_epoch + loop.batch_index)
    try:
        with StopRequest() as stop:
            loop.run(stop, bar, checkpoint_path)
    finally:
        bar.close()
    return loop.result(keep_model=keep_model)


def run_task(config: RunConfig, *, checkpoint_path: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """The sweep engine's default task: train, return status, final metrics and history."""
    result = train(config, checkpoint_path=checkpoint_path, resume=resume, progress=False)
    return {"status": result.status, "metrics": result.metrics(), "history": result.history}


def _build(config: RunConfig) -> tuple[data_module.Dataset, nn.Module, dict[str, torch.Generator]]:
    """Load the data, build and initialise the model, wire the dropout generator."""
    dataset = data_module.load(config.data, seed=config.seed, device=config.device)
    gens = make_generators(config.seed, config.device)
    model = build_model(config.model, dataset.input_shape, dataset.num_classes,
                        generator=gens["init"]).to(config.device)
    set_dropout_generator(model, gens["dropout"])
    return dataset, model, gens


def _uses_bf16_copies(config: RunConfig, model: nn.Module) -> bool:
    """Whether a run trains on bfloat16 working copies of its weights: in bf16 precision on the
    CPU (where the one-pass update that rewrites them runs; CUDA keeps plain autocast), for
    float32 models."""
    return (config.precision == "bf16"
            and all(p.is_cpu and p.dtype == torch.float32 for p in model.parameters()))


class TrainingLoop:
    """The state of one run between mini-batches, and the loop that advances it.

    Everything needed to continue bitwise identically lives in :meth:`state`: the weights,
    velocities, generator states, the position inside the current epoch (its permutation and
    batch index), the running sums and the history.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.dataset, self.model, self.gens = _build(config)
        self.reconstruct = _is_autoencoder(config)
        # bf16: the forward pass runs on bfloat16 copies of the weights that each update
        # rewrites, instead of autocast casting every weight and its gradient on every step
        # (bitwise the same numbers; dropoutlab.bf16_weights)
        self.copies = BF16Weights(self.model) if _uses_bf16_copies(config, self.model) else None
        self.opt = recipe.MomentumSGD(self.model, damped=config.optim.damped_momentum,
                                      max_norm=config.optim.max_norm, copies=self.copies)
        n_train = len(self.dataset.train_y)
        self.batches_per_epoch = math.ceil(n_train / config.optim.batch_size)
        device = self.dataset.train_x.device
        # Syncing on the loss is free on the CPU; on a GPU check for NaNs every 25 batches.
        self.check_every = 1 if device.type == "cpu" else 25
        self.epoch = 0  # completed epochs
        self.step = 0  # completed updates
        self.batch_index = 0  # completed batches of the current epoch
        self.perm: torch.Tensor | None = None  # data order of the current epoch
        self.acc_loss = torch.zeros((), dtype=torch.float64, device=device)
        self.acc_wrong = torch.zeros((), dtype=torch.float64, device=device)
        self.acc_n = 0
        self.history: list[dict[str, float | int | None]] = []
        self.elapsed = 0.0
        self.best_val = math.inf
        self.since_best = 0
        self.status = "running"
        self.diverged_epoch: int | None = None
        self.chance_loss = _chance_loss(self.dataset, self.reconstruct)
        self._t0 = time.perf_counter()

    # -- checkpoints ---------------------------------------------------------------------
    def seconds(self) -> float:
        """Wall-clock seconds spent so far, over all resumed pieces."""
        return self.elapsed + time.perf_counter() - self._t0

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint must hold (tensors, numbers, lists, dicts: weights_only-safe)."""
        return {
            "config": self.config.to_dict(), "config_hash": config_hash(self.config),
            "model": self.model.state_dict(), "velocity": self.opt.state_dict()["velocity"],
            "generators": {name: self.gens[name].get_state() for name in ("order", "dropout")},
            "epoch": self.epoch, "step": self.step, "batch_index": self.batch_index,
            "perm": None if self.perm is None else self.perm.cpu(),
            "acc_loss": self.acc_loss.cpu(), "acc_wrong": self.acc_wrong.cpu(),
            "acc_n": self.acc_n, "history": self.history, "elapsed": self.seconds(),
            "best_val": self.best_val, "since_best": self.since_best, "status": self.status,
            "diverged_epoch": self.diverged_epoch,
        }

    def restore(self, state: Mapping[str, Any], path: str | Path = "checkpoint") -> None:
        """Continue from a :meth:`state` dict, after checking it fits this run.

        Raises:
            CheckpointError: a field is missing or has the wrong type or shape; nothing of
                this loop has changed then.
        """
        self._check_state(state, str(path))
        device = self.dataset.train_x.device
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict({"velocity": state["velocity"]})
        for name, gen_state in state["generators"].items():
            self.gens[name].set_state(gen_state)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_index = int(state["batch_index"])
        self.perm = None if state["perm"] is None else state["perm"].to(device)
        self.acc_loss = state["acc_loss"].to(device)
        self.acc_wrong = state["acc_wrong"].to(device)
        self.acc_n = int(state["acc_n"])
        self.history = [dict(row) for row in state["history"]]
        self.elapsed, self._t0 = float(state["elapsed"]), time.perf_counter()
        self.best_val, self.since_best = float(state["best_val"]), int(state["since_best"])
        self.status, self.diverged_epoch = str(state["status"]), state["diverged_epoch"]

    def _check_state(self, state: Mapping[str, Any], path: str) -> None:
        """Refuse a checkpoint whose fields do not fit this run's model, data and recipe."""

        def refuse(field: str, expected: str, got: object) -> None:
            raise CheckpointError(
                f"checkpoint {path!r} does not fit this run: `{field}` must be {expected}, got "
                f"{got}; delete it (or drop --resume) to start the run afresh")

        missing = sorted(set(self.state()) - set(state))
        if missing:
            refuse(missing[0], "present", f"a checkpoint without it (missing: "
                   f"{', '.join(missing)})")
        model = self.model.state_dict()
        saved = state["model"]
        if not isinstance(saved, Mapping) or set(saved) != set(model):
            refuse("model", f"the tensors {sorted(model)}",
                   sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__)
        for name, tensor in model.items():
            if not isinstance(saved[name], torch.Tensor) or saved[name].shape != tensor.shape:
                refuse(f"model.{name}", f"a tensor of shape {tuple(tensor.shape)}",
                       _shape(saved[name]))
        velocity = state["velocity"]
        params = [p for p in self.opt.velocity]
        if not isinstance(velocity, list | tuple) or len(velocity) != len(params):
            refuse("velocity", f"a list of {len(params)} tensors", _shape(velocity))
        for i, (v, p) in enumerate(zip(velocity, params, strict=True)):
            if not isinstance(v, torch.Tensor) or v.shape != p.shape:
                refuse(f"velocity[{i}]", f"a tensor of shape {tuple(p.shape)}", _shape(v))
        gens = state["generators"]
        if not isinstance(gens, Mapping) or set(gens) != {"order", "dropout"} or not all(
                isinstance(g, torch.Tensor) for g in gens.values()):
            refuse("generators", "generator states for 'order' and 'dropout'", _shape(gens))
        for name in ("epoch", "step", "batch_index", "acc_n", "since_best"):
            if isinstance(state[name], bool) or not isinstance(state[name], int) or \
                    state[name] < 0:
                refuse(name, "an integer >= 0", repr(state[name]))
        if state["batch_index"] > self.batches_per_epoch:
            refuse("batch_index", f"at most the {self.batches_per_epoch} batches of an epoch",
                   state["batch_index"])
        perm = state["perm"]
        n_train = len(self.dataset.train_y)
        if perm is not None and (not isinstance(perm, torch.Tensor) or
                                 perm.shape != (n_train,) or perm.dtype != torch.int64):
            refuse("perm", f"None or an int64 tensor of shape ({n_train},)", _shape(perm))
        for name in ("acc_loss", "acc_wrong"):
            if not isinstance(state[name], torch.Tensor) or state[name].shape != ():
                refuse(name, "a scalar tensor", _shape(state[name]))
        for name in ("elapsed", "best_val"):
            if isinstance(state[name], bool) or not isinstance(state[name], int | float):
                refuse(name, "a number", repr(state[name]))
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(r, Mapping) for r in history) \
                or len(history) != state["epoch"]:
            refuse("history", f"a list of {state['epoch']} per-epoch rows", _shape(history))
        if state["status"] not in ("running", "done", "diverged"):
            refuse("status", "'running', 'done' or 'diverged'", repr(state["status"]))

    def _save(self, path: str | Path | None) -> None:
        if path is not None:
            save_checkpoint(path, self.state())

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: StopRequest, bar: _Bar, checkpoint_path: str | Path | None) -> None:
        """Train until the epoch budget, early stopping, divergence or a stop request."""
        config = self.config
        report_epoch(self.epoch, config.epochs)
        while self.status == "running" and self.epoch < config.epochs:
            self._train_epoch(stop, bar)
            if stop.requested is not None:
                self._save(checkpoint_path)
                log.warning("stopped by signal %d after %d updates; checkpoint %s",
                            stop.requested, self.step, checkpoint_path or "not written")
                raise KeyboardInterrupt
            if self.status == "diverged":
                break
            self._end_epoch(bar)
            report_epoch(self.epoch, config.epochs)
            if self.epoch % config.checkpoint_every == 0 and self.epoch < config.epochs:
                self._save(checkpoint_path)
        if self.status == "running":
            self.status = "done"
        self._save(checkpoint_path)

    def _train_epoch(self, stop: StopRequest, bar: _Bar) -> None:
        """Run the remaining mini-batches of the current epoch (stops early on a signal)."""
        x_all, y_all = self.dataset.train_x, self.dataset.train_y
        optim, model = self.config.optim, self.model
        if self.perm is None:
            self.perm = torch.randperm(len(y_all), generator=self.gens["order"],
                                       device=x_all.device)
        model.train()
        bs = optim.batch_size
        while self.batch_index < self.batches_per_epoch:
            index = self.perm[self.batch_index * bs:(self.batch_index + 1) * bs]
            # (B, D), (B,); index_select is the same gather as x_all[index], and cheaper
            # on CPU for small batches
            xb, yb = x_all.index_select(0, index), y_all.index_select(0, index)
            with autocast(self.config.precision, x_all.device):
                forward: Any = model if self.copies is None else self.copies
                if optim.kl_sparsity > 0:  # the penalty reads the hidden activations
                    out, hidden = forward.forward_with_hidden(xb)
                    hidden = [h.float() for h in hidden]
                else:
                    out, hidden = forward(xb), []
            loss, wrong = _loss_and_wrong(out, xb, yb, self.reconstruct)
            l2 = recipe.fused_l2(optim, self.epoch)  # taken by the update, not the loss
            extra = recipe.penalty(model, optim, self.epoch, hidden, include_l2=l2 == 0)
            total = loss if extra is None else loss + extra
            if self.batch_index % self.check_every == 0 and not bool(torch.isfinite(total)):
                self.status, self.diverged_epoch = "diverged", self.epoch + 1
                log.warning("loss became non-finite in epoch %d (update %d); stopping",
                            self.epoch + 1, self.step)
                return
            self.opt.zero_grad()
            total.backward()
            self.opt.step(recipe.learning_rate(optim, self.step, self.epoch),
                          recipe.momentum(optim, self.step), l2)
            self.acc_loss += loss.detach().double() * len(yb)
            self.acc_wrong += wrong.double()
            self.acc_n += len(yb)
            self.step += 1
            self.batch_index += 1
            if self.batch_index % 20 == 0 or self.batch_index == self.batches_per_epoch:
                bar.advance(20 if self.batch_index % 20 == 0 else self.batch_index % 20)
            if stop.requested is not None:
                return
        if not math.isfinite(self.acc_loss.item()):  # NaNs that slipped between GPU checks
            self.status, self.diverged_epoch = "diverged", self.epoch + 1

    def _end_epoch(self, bar: _Bar) -> None:
        """Evaluate, append the epoch's history row, reset the running sums."""
        config, ds = self.config, self.dataset
        self.epoch += 1
        val_loss, val_error = evaluate(self.model, ds.val_x, ds.val_y,
                                       reconstruct=self.reconstruct,
                                       precision=config.precision)
        test_loss = test_error = math.nan
        if self.epoch % config.eval_test_every == 0 or self.epoch == config.epochs:
            test_loss, test_error = evaluate(self.model, ds.test_x, ds.test_y,
                                             reconstruct=self.reconstruct,
                                             precision=config.precision)
        scale = 1.0 if self.reconstruct else 100.0
        norm_max, norm_mean = _weight_norms(self.model)
        last_step = max(self.step - 1, 0)
        row: dict[str, float | int | None] = {
            "epoch": self.epoch,
            "train_loss": self.acc_loss.item() / self.acc_n,
            "train_error": scale * self.acc_wrong.item() / self.acc_n,
            "val_loss": _none_if_nan(val_loss), "val_error": _none_if_nan(val_error),
            "test_loss": _none_if_nan(test_loss), "test_error": _none_if_nan(test_error),
            "lr": recipe.learning_rate(config.optim, last_step, self.epoch - 1),
            "momentum": recipe.momentum(config.optim, last_step),
            "weight_norm_max": norm_max, "weight_norm_mean": norm_mean,
            "seconds": self.seconds(),
        }
        self.history.append(row)
        diverged = self._far_above_chance()
        self.perm, self.batch_index = None, 0
        self.acc_loss.zero_()
        self.acc_wrong.zero_()
        self.acc_n = 0
        text = " ".join(f"{k} {_fmt(row[k])}" for k in
                        ("train_loss", "train_error", "val_loss", "val_error", "test_error"))
        log.info("epoch %d/%d %s (%.1f s)", self.epoch, config.epochs, text, row["seconds"])
        bar.advance(0, f"epoch {self.epoch}/{config.epochs} loss {_fmt(row['train_loss'])} "
                       f"val {_fmt(row['val_error'])} test {_fmt(row['test_error'])}")
        if diverged:
            self.status, self.diverged_epoch = "diverged", self.epoch
            log.warning("training loss above %g × chance (%.4g) for %d epochs in a row; "
                        "stopping as diverged (lower the learning rate)", DIVERGENCE_FACTOR,
                        self.chance_loss, min(DIVERGENCE_EPOCHS, config.epochs))
            return
        if not math.isnan(val_error):
            if val_error < self.best_val:
                self.best_val, self.since_best = val_error, 0
            else:
                self.since_best += 1
            if config.early_stopping is not None and self.since_best >= config.early_stopping:
                log.info("early stopping: no better validation error for %d epochs",
                         self.since_best)
                self.status = "done"

    def _far_above_chance(self) -> bool:
        """The divergence rule of the module docstring, on the history so far."""
        needed = min(DIVERGENCE_EPOCHS, self.config.epochs)
        recent = self.history[-needed:]
        limit = DIVERGENCE_FACTOR * self.chance_loss
        return len(recent) == needed and all(
            float(row["train_loss"]) > limit for row in recent)  # type: ignore[arg-type]

    def result(self, *, keep_model: bool = False) -> RunResult:
        """The :class:`RunResult` of the run as it stands."""
        last = self.history[-1] if self.history else {}
        diagnosis = diagnose(self.history)
        errors: dict[str, float | None] = {"test": None, "val": None, "train": None}
        if self.status != "diverged" and last:
            errors["test"] = _as_float(last.get("test_error"))
            errors["val"] = _as_float(last.get("val_error"))
            errors["train"] = evaluate(self.model, self.dataset.train_x, self.dataset.train_y,
                                       reconstruct=self.reconstruct,
                                       precision=self.config.precision)[1]
        gap = generalization_gap(errors["val"], errors["test"], errors["train"])
        return RunResult(
            config=self.config, status=self.status, test_error=errors["test"],
            val_error=errors["val"], train_error=errors["train"],
            best_epoch=diagnosis["best_epoch"], overfitting_onset=diagnosis["overfitting_onset"],
            generalization_gap=gap, diverged_epoch=self.diverged_epoch, epochs=self.epoch,
            seconds=self.seconds(), history=self.history,
            model=self.model if keep_model else None,
        )


def _chance_loss(dataset: data_module.Dataset, reconstruct: bool) -> float:
    """The loss of a net that has learnt nothing (see the module docstring)."""
    if reconstruct:
        return float(dataset.train_x.double().pow(2).mean())
    return math.log(dataset.num_classes)


def _shape(value: object) -> str:
    """How a refused checkpoint field looks, for the message."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return type(value).__name__


def _as_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.4g}"
