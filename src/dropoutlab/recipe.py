"""The paper's optimisation recipe (Srivastava et al. 2014, §5.1, Appendix A; Hinton et al. 2012).

Dropout works best with large, decaying learning rates, high momentum and max-norm (§5.1).

**Momentum ramp** over the first ``T = momentum_updates`` updates ``t`` (then constant m₁):

* ``"linear"`` (Hinton et al. 2012): m(t) = m₀ + (m₁ − m₀)·min(t/T, 1).
* ``"exponential"`` (deepnet style): 1 − m falls geometrically,
  1 − m(t) = (1 − m₀)·((1 − m₁)/(1 − m₀))^min(t/T, 1), so most of the rise comes early.

**Learning rate** after ``t`` updates, in epoch ``e`` (0-based):

* ``"constant"``: ε₀; ``"exponential"``: ε₀·decay^e (``lr_decay`` per epoch);
* ``"inverse_t"``: ε₀ / (1 + t/t₀) with t₀ = ``lr_decay`` updates (deepnet's MNIST example
  uses ε₀ = 1, t₀ = 10⁴).

**Update** with gradient g (of the mean loss over the mini-batch, penalties included):

* damped momentum (``damped_momentum=True``, Hinton et al. 2012): Δw ← mΔw − (1 − m)εg;
* classical momentum: Δw ← mΔw − εg; then w ← w + Δw, and after every update each unit's
  incoming weight vector is projected onto ‖w‖₂ ≤ c (max-norm, §5.1; all Linear/Conv layers,
  the output layer included, biases never).

The update Δw ← mΔw, Δw ← Δw + sg, w ← w + Δw is one pass over memory per parameter on CPU
(the native kernel, :func:`dropoutlab.kernels.momentum_step_`) and three batched
``torch._foreach_*`` calls elsewhere or with the ``"torch"`` backend; both give the same bits.
An L2 penalty λ·Σw² (Table 9) joins the gradient in that same pass, g ← g + λ·2w, whenever it is
the only weight penalty of the epoch (:func:`fused_l2`): bitwise the gradient autograd gives
for it, without the penalty's own passes over every weight.
Gradients are freed between steps by default so that backward adopts each freshly computed
gradient instead of adding it into a kept one (see :meth:`MomentumSGD.zero_grad` for the
trade-off).

Our presets use **damped** momentum. With classical momentum the effective step is ε/(1 − m),
which grows 50-fold while m ramps 0.5 → 0.99 and makes the large rates dropout needs blow up
early or crawl late; the damped form keeps the step at about ε throughout the ramp, so one ε
works for the whole run (the reason Hinton et al. 2012 wrote the update this way).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn

from dropoutlab import backend, kernels, penalties
from dropoutlab.bf16_weights import BF16Weights
from dropoutlab.config import OptimConfig
from dropoutlab.constraints import MaxNorm

__all__ = ["MomentumSGD", "fused_l2", "learning_rate", "momentum", "penalty"]


def momentum(optim: OptimConfig, step: int) -> float:
    """Momentum m for update number ``step`` (0-based), per the configured ramp."""
    m0, m1, horizon = optim.momentum_start, optim.momentum_end, optim.momentum_updates
    frac = 1.0 if horizon == 0 else min(step / horizon, 1.0)
    if optim.momentum_ramp == "linear":
        return m0 + (m1 - m0) * frac
    return 1.0 - (1.0 - m0) * ((1.0 - m1) / (1.0 - m0)) ** frac


def learning_rate(optim: OptimConfig, step: int, epoch: int) -> float:
    """Learning rate ε for update ``step`` (0-based) in ``epoch`` (0-based)."""
    if optim.lr_schedule == "constant":
        return optim.lr
    if optim.lr_schedule == "exponential":
        return optim.lr * optim.lr_decay**epoch
    return optim.lr / (1.0 + step / optim.lr_decay)


class _Update(NamedTuple):
    """The parameters one step updates, column by column (index i is one parameter)."""

    params: list[torch.Tensor]
    velocity: list[torch.Tensor]
    grads: list[torch.Tensor]
    copies: list[torch.Tensor]  # their bfloat16 copies; empty without copies
    decay: list[float]  # L2 coefficient of each (0 for biases)


class MomentumSGD:
    """SGD with a per-step momentum and learning rate, damped or classical, plus max-norm.

    The schedule lives outside: the training loop calls ``step(lr, m)`` with the values of
    :func:`learning_rate` and :func:`momentum`. Velocities are plain tensors so a checkpoint
    can store them (:meth:`state_dict`).

    Args:
        model: The model whose parameters are updated.
        damped: Use Δw ← mΔw − (1 − m)εg (True) or Δw ← mΔw − εg (False).
        max_norm: Radius c of the max-norm ball, or ``None`` for no constraint.
        copies: bfloat16 working copies of ``model``'s parameters that the forward pass ran on
            (mixed precision, :class:`dropoutlab.bf16_weights.BF16Weights`): their gradients
            update the float32 parameters, and each step rewrites them.
    """

    def __init__(self, model: nn.Module, *, damped: bool = True,
                 max_norm: float | None = None, copies: BF16Weights | None = None) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.velocity = [torch.zeros_like(p) for p in self.params]
        self.damped = damped
        self.constraint = MaxNorm(max_norm) if max_norm is not None else None
        if copies is not None and [id(p) for p in copies.masters] != [id(p) for p in self.params]:
            raise ValueError("`copies` must be the BF16Weights of `model` (the same trainable "
                             "parameters in the same order)")
        self.copies = copies
        weights = {id(p) for p in penalties.weight_parameters(model)}
        self._is_weight = [id(p) in weights for p in self.params]  # what L2 applies to

    def zero_grad(self, *, set_to_none: bool = True) -> None:
        """Clear the gradients before the next backward.

        Args:
            set_to_none: Free them (default): autograd then adopts each newly computed
                gradient as it is, with no extra pass. ``False`` zeroes the existing tensors in
                place (one batched call), keeping them allocated, so backward must add into
                them (``grad += new``). Keeping costs a zeroing pass plus a read-add-write
                pass over every gradient per step, and repays it only in a process whose heap
                glibc still trims and re-grows around the freed gradients (page faults on
                every step); the training loop, whose evaluation frees large tensors, rarely
                is one.
                A kept gradient that a later backward does not reach stays zero, so momentum
                still moves that parameter, as for any weight the loss does not depend on.
        """
        if self.copies is not None:
            self.copies.zero_grad()
        if set_to_none:
            for p in self.params:
                p.grad = None
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    @torch.no_grad()
    def step(self, lr: float, m: float, l2: float = 0.0) -> None:
        """One update with learning rate ``lr`` and momentum ``m``, then the max-norm projection.

        Δw ← mΔw, then Δw ← Δw + s·g with s = −(1 − m)ε (damped) or −ε, then w ← w + Δw: the
        same elementwise operations, in the same order, as one loop per parameter, so bitwise
        the per-parameter result. On CPU the native kernel does all three in one pass over
        memory (:func:`dropoutlab.kernels.momentum_step_`, unless the backend is ``"torch"``);
        elsewhere three batched ``torch._foreach_*`` calls do them. With bfloat16 ``copies``
        the gradients are theirs, widened to float32, and the same pass rewrites the copies
        (:func:`dropoutlab.kernels.momentum_step_bf16_`); copies the projection changes are
        re-cast after it.

        Args:
            lr: Learning rate ε of this update.
            m: Momentum of this update.
            l2: Coefficient λ of an L2 penalty λ·Σw² (:func:`dropoutlab.penalties.l2`) that
                this update adds to the weights' gradients, g ← g + λ·2w, in the same pass;
                the caller leaves it out of the loss (:func:`fused_l2`). Biases never get it.
        """
        grad_scale = -(1.0 - m) * lr if self.damped else -lr
        if self.copies is not None:
            self._step_with_copies(m, grad_scale, l2)
        else:
            self._step(m, grad_scale, l2)
        if self.constraint is not None:
            self.constraint(self.model)
            if self.copies is not None:
                self.copies.refresh()  # re-cast the weights the projection changed

    def _reached(self, l2: float) -> _Update:
        """The parameters this step's loss reached (the others are left alone), with their
        gradients: the parameter's, its copy's, or (a penalty on the float32 weight beside a
        loss on the copy) their sum."""
        copies: list[torch.Tensor | None] = (
            list(self.copies.copies) if self.copies is not None else [None] * len(self.params))
        update = _Update([], [], [], [], [])
        for p, v, c, is_weight in zip(self.params, self.velocity, copies, self._is_weight,
                                      strict=True):
            c_grad = None if c is None else c.grad
            if p.grad is None and c_grad is None:
                continue
            if p.grad is None:
                g = c_grad
            elif c_grad is None:
                g = p.grad
            else:
                g = p.grad + c_grad.float()
            assert g is not None
            update.params.append(p)
            update.velocity.append(v)
            update.grads.append(g)
            if c is not None:
                update.copies.append(c)
            update.decay.append(l2 if is_weight else 0.0)
        return update

    @staticmethod
    def _with_l2(grads: list[torch.Tensor], params: list[torch.Tensor],
                 decay: list[float]) -> list[torch.Tensor]:
        """g + λ·(2w) per tensor, rounded as the native kernel and autograd round it."""
        return [g if d == 0 else g + (w * 2).mul_(d)
                for g, w, d in zip(grads, params, decay, strict=True)]

    def _step(self, m: float, grad_scale: float, l2: float) -> None:
        params, velocity, grads, _, decay = self._reached(l2)
        if not params:
            return
        if not (backend.get_backend() != "torch"
                and kernels.momentum_step_(params, velocity, grads, m, grad_scale, decay)):
            torch._foreach_mul_(velocity, m)
            torch._foreach_add_(velocity, self._with_l2(grads, params, decay),
                                alpha=grad_scale)
            torch._foreach_add_(params, velocity)

    def _step_with_copies(self, m: float, grad_scale: float, l2: float) -> None:
        """The update from the bfloat16 copies' gradients (plus any float32 gradient a penalty
        left on a parameter), then each copy rewritten from its updated parameter."""
        assert self.copies is not None
        params, velocity, grads, copies, decay = self._reached(l2)
        if not params:
            return
        if not (backend.get_backend() != "torch" and kernels.momentum_step_bf16_(
                params, velocity, grads, copies, m, grad_scale, decay)):
            torch._foreach_mul_(velocity, m)
            torch._foreach_add_(velocity,
                                self._with_l2([g.float() for g in grads], params, decay),
                                alpha=grad_scale)
            torch._foreach_add_(params, velocity)
            torch._foreach_copy_(copies, params)
        self.copies.written()

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        """The velocities, for a checkpoint."""
        return {"velocity": [v.clone() for v in self.velocity]}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        """Restore velocities saved by :meth:`state_dict`."""
        saved = state["velocity"]
        if len(saved) != len(self.velocity):
            raise ValueError(
                f"checkpoint has {len(saved)} velocity tensors, the model needs "
                f"{len(self.velocity)}"
            )
        for v, s in zip(self.velocity, saved, strict=True):
            v.copy_(s)


def fused_l2(optim: OptimConfig, epoch: int) -> float:
    """The L2 coefficient the update of ``epoch`` (0-based) applies itself
    (:meth:`MomentumSGD.step`), leaving it out of :func:`penalty`; 0 when there is none.

    That is ``l2`` whenever L1 is off in that epoch: the weights' gradient is then the loss's
    plus L2's, one addition either way, so the fused update gives autograd's bits. With L1 on
    as well, autograd sums the two penalties' gradients in its own order, so both stay there.
    """
    l1_on = optim.l1 > 0 and epoch >= optim.l1_from_epoch
    return 0.0 if l1_on else optim.l2


def penalty(model: nn.Module, optim: OptimConfig, epoch: int,
            hidden: Iterable[torch.Tensor] = (), *, include_l2: bool = True
            ) -> torch.Tensor | None:
    """The weight and activity penalties to add to the loss in ``epoch`` (0-based), or None.

    L2 (coefficient ``l2``) on all weights, unless ``include_l2`` is False (the update applies
    it, :func:`fused_l2`); L1 (``l1``) from epoch ``l1_from_epoch`` on (Table 9's "L1 towards
    the end"); KL-sparsity (``kl_sparsity``, target ``kl_target``) on every hidden layer's
    activations in ``hidden``.
    """
    terms = []
    if optim.l2 > 0 and include_l2:
        terms.append(optim.l2 * penalties.l2(model))
    if optim.l1 > 0 and epoch >= optim.l1_from_epoch:
        terms.append(optim.l1 * penalties.l1(model))
    if optim.kl_sparsity > 0:
        terms += [optim.kl_sparsity * penalties.kl_sparsity(h, optim.kl_target) for h in hidden]
    if not terms:
        return None
    return torch.stack(terms).sum()
