"""``nn.Module`` shells around :mod:`dropoutlab.functional` (Srivastava et al. 2014, §4, §10).

Each layer validates its arguments at construction and its ``forward`` is one call. They are
drop-in replacements for ``torch.nn.Dropout``: ``p`` is the drop probability, ``inplace`` is
accepted, and they work under ``torch.compile(fullgraph=True)``, ``torch.export`` and
``torch.func`` (see :mod:`dropoutlab.functional`). ``torch.jit.script`` refuses them with a
clear error: their forward chooses a kernel and takes a ``torch.Generator`` in Python.
"""

from __future__ import annotations

import torch
from torch import nn

from dropoutlab import functional as F
from dropoutlab._validation import check_bool, check_probability, check_scale

__all__ = ["Dropout", "GaussianDropout"]


def _refuse_script(layer: nn.Module) -> nn.Module:
    """``__prepare_scriptable__``: torch.jit.script calls it first; say why it cannot work."""
    name = type(layer).__name__
    raise RuntimeError(
        f"dropoutlab.{name} cannot be compiled by torch.jit.script: its forward chooses the "
        "native or torch kernel and takes an optional torch.Generator in Python, which "
        "TorchScript cannot express. Use torch.compile or torch.export (both supported), or "
        f"torch.nn.Dropout in a model that must be scripted"
    )


class Dropout(nn.Module):
    """Bernoulli dropout (§4): zero each element with probability ``p`` while training.

    Evaluation mode *is* the paper's weight-scaling inference (§4, Figure 2) in both modes:
    with ``scale="train"`` (inverted dropout) kept units are × 1/(1−p) while training and
    evaluation is the identity; with ``scale="test"`` training does not scale and evaluation
    multiplies by (1−p).

    Args:
        p: Drop probability in [0, 1]. The paper's retention probability is 1 − p.
        inplace: Write the result into the input, as ``torch.nn.Dropout(inplace=True)``.
        scale: ``"train"`` (default) or ``"test"``, see above.

    Attributes:
        generator: Optional ``torch.Generator`` used when ``forward`` gets none; ``None`` (the
            default) draws from torch's global generator. :func:`dropoutlab.inference.mc_predict`
            sets it for the duration of a call.

    Shape:
        Input: ``(*)``, any shape. Output: ``(*)``, same shape, dtype and device.

    Example:
        >>> layer = Dropout(0.5)
        >>> y = layer(torch.ones(2, 8), generator=torch.Generator().manual_seed(0))
        >>> y.shape
        torch.Size([2, 8])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, scale: str = "train") -> None:
        super().__init__()
        self.p = check_probability(p, "p")
        self.inplace = check_bool(inplace, "inplace")
        self.scale = check_scale(scale)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Apply dropout (§4); ``generator`` overrides :attr:`generator` for this call."""
        gen = generator if generator is not None else self.generator
        return F.dropout(x, self.p, self.training, self.inplace, scale=self.scale, generator=gen)

    def after_relu(self, x: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """``self(torch.relu(x))`` bitwise, in one pass where it can (:func:`F.relu_dropout`)."""
        gen = generator if generator is not None else self.generator
        return F.relu_dropout(x, self.p, self.training, self.inplace, scale=self.scale,
                              generator=gen)

    __prepare_scriptable__ = _refuse_script

    def extra_repr(self) -> str:
        """``p=0.5, scale='train'`` (and ``inplace=True`` when set): shown in ``repr``."""
        text = f"p={self.p}, scale={self.scale!r}"
        return text + ", inplace=True" if self.inplace else text


class GaussianDropout(nn.Module):
    """Gaussian multiplicative dropout (§10): ``x * r`` with ``r ~ N(1, p/(1−p))`` while training.

    The noise has the mean and variance of inverted Bernoulli dropout with drop probability
    ``p``, so the two can be swapped in a config. Evaluation is the identity.

    Args:
        p: Drop probability of the matching Bernoulli dropout, in [0, 1).
        inplace: Write the result into the input.

    Attributes:
        generator: Optional ``torch.Generator`` used when ``forward`` gets none.

    Shape:
        Input: ``(*)``, any shape. Output: ``(*)``, same shape, dtype and device.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_probability(p, "p", allow_one=False)
        self.inplace = check_bool(inplace, "inplace")
        self.generator: torch.Generator | None = None

    @property
    def sigma(self) -> float:
        """Standard deviation of the multiplicative noise, sqrt(p/(1−p)) (§10)."""
        return F.gaussian_sigma(self.p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Apply Gaussian dropout (§10); ``generator`` overrides :attr:`generator` for this call."""
        gen = generator if generator is not None else self.generator
        return F.gaussian_dropout(x, self.p, self.training, self.inplace, generator=gen)

    __prepare_scriptable__ = _refuse_script

    def extra_repr(self) -> str:
        """``p=0.5, sigma=1`` (and ``inplace=True`` when set): shown in ``repr``."""
        text = f"p={self.p}, sigma={self.sigma:.4g}"
        return text + ", inplace=True" if self.inplace else text
