"""bfloat16 working copies of a model's float32 weights, for mixed-precision training.

Under ``torch.autocast`` every forward pass casts each float32 weight to bfloat16, and every
backward pass casts each bfloat16 weight gradient back to float32: two passes over all the
weights per step, which on a CPU cost more than the bfloat16 matrix products save at the
paper's layer sizes. :class:`BF16Weights` keeps one bfloat16 copy of each float32 parameter
instead. The forward pass runs on the copies (still under autocast, which leaves bfloat16
tensors as they are), so the gradients arrive in bfloat16 on the copies, and the optimizer
(:class:`dropoutlab.recipe.MomentumSGD`) updates the float32 masters from them and rewrites the
copies in the same pass (:func:`dropoutlab.kernels.momentum_step_bf16_`).

The numbers are autocast's, bitwise: a copy holds exactly the cast autocast would make, and
autocast's weight gradient is the same bfloat16 product widened to float32. The masters stay
the model's parameters, so the max-norm projection, checkpoints, evaluation and anything else
that reads or writes the model see float32 weights; a copy is refreshed whenever its master's
version counter shows that something else wrote to it (a projection, a checkpoint load).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from dropoutlab.precision import autocast

__all__ = ["BF16Weights"]


class _WithHidden(nn.Module):
    """``model.forward_with_hidden`` as a forward pass, so ``functional_call`` can run it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner: Any = model  # a submodule, so functional_call finds "inner.<name>"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        result: tuple[torch.Tensor, list[torch.Tensor]] = self.inner.forward_with_hidden(x)
        return result


class BF16Weights:
    """bfloat16 copies of ``model``'s float32 parameters that the forward pass runs on.

    Args:
        model: A module whose trainable parameters are all float32.

    Raises:
        TypeError: a trainable parameter is not float32.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> copies = BF16Weights(model)
        >>> copies(torch.ones(3, 4)).dtype
        torch.bfloat16
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names: list[str] = []
        self.masters: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if p.dtype != torch.float32:
                raise TypeError(f"BF16Weights needs float32 parameters, got {name} with "
                                f"dtype={p.dtype}")
            self.names.append(name)
            self.masters.append(p)
        self.copies = [p.detach().to(torch.bfloat16).requires_grad_() for p in self.masters]
        self._by_name = dict(zip(self.names, self.copies, strict=True))  # for functional_call
        self._versions = [p._version for p in self.masters]
        self._with_hidden = _WithHidden(model)
        self._by_inner_name = {f"inner.{n}": c for n, c in self._by_name.items()}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward pass on ``x`` with the bfloat16 copies, under bf16 autocast."""
        self.refresh()
        with autocast("bf16", x.device):
            out: torch.Tensor = functional_call(self.model, self._by_name, (x,))
        return out

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The model's ``forward_with_hidden`` on the copies, under bf16 autocast: the logits
        and the hidden activations (which the KL-sparsity penalty reads)."""
        self.refresh()
        with autocast("bf16", x.device):
            out: tuple[torch.Tensor, list[torch.Tensor]] = functional_call(
                self._with_hidden, self._by_inner_name, (x,))
        return out

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-cast every copy whose master was written since the copy was last made."""
        for i, (p, c) in enumerate(zip(self.masters, self.copies, strict=True)):
            if p._version != self._versions[i]:
                c.copy_(p)
                self._versions[i] = p._version

    def written(self) -> None:
        """Record that every copy now equals its master (the optimizer rewrote both)."""
        self._versions = [p._version for p in self.masters]

    def zero_grad(self) -> None:
        """Free the copies' gradients before the next backward."""
        for c in self.copies:
            c.grad = None
