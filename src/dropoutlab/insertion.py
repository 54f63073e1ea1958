"""Put dropout into a model someone else wrote (Srivastava et al. 2014, §4 and §A.4).

:func:`insert_dropout` returns a copy of a model with :class:`~dropoutlab.Dropout` after each
activation module of the chosen types (dropout of hidden units, §4), and optionally before the
whole model (dropout of the inputs, retention 0.8 for real-valued inputs in §A.4). After an
``nn.ReLU`` it puts :class:`ReLUDropout`, the fused ``Dropout.after_relu`` form: one pass instead
of two, bitwise the same result as ``ReLU`` followed by ``Dropout``.

Only activation *modules* are seen. An activation called as a function inside ``forward``
(``torch.relu(x)``, ``F.relu(x)``) is invisible to a module walk; such a model gets no hidden
dropout from here and :func:`insert_dropout` says so instead of returning it unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from dropoutlab.layers import Dropout

__all__ = ["ReLUDropout", "insert_dropout"]


class ReLUDropout(Dropout):
    """``ReLU`` then :class:`~dropoutlab.Dropout` in one call (``Dropout.after_relu``).

    It is a :class:`~dropoutlab.Dropout` (``isinstance`` holds, so seeding it with a generator
    works as for any dropout layer); its ``forward`` applies the ReLU itself.

    Args:
        p: Drop probability in [0, 1]; the paper's retention is 1 − p.
        scale: ``"train"`` (inverted dropout, default) or ``"test"`` (the paper's form).

    Shape:
        Input: ``(*)``. Output: ``(*)``, the same shape.
    """

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``Dropout(ReLU(x))`` in one pass where the backend can (bitwise the same)."""
        return self.after_relu(x, generator)

    def extra_repr(self) -> str:
        """``relu, p=0.5, scale='train'``."""
        return "relu, " + super().extra_repr()


def _check_after(after: object) -> tuple[type[nn.Module], ...]:
    types = (after,) if isinstance(after, type) else after
    if (not isinstance(types, Sequence) or not types
            or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types)):
        raise ValueError(f"`after` must be an nn.Module class or a non-empty tuple of them, "
                         f"got after={after!r}")
    return tuple(types)


def _check_p(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a drop probability in [0, 1), got {name}={value!r}")
    return float(value)


def _rewrite(module: nn.Module, p: float, after: tuple[type[nn.Module], ...],
             scale: str) -> int:
    """Replace matching activation children of ``module`` (recursively); return how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, Dropout):
            continue
        if isinstance(child, after):
            if type(child) is nn.ReLU:
                replacement: nn.Module = ReLUDropout(p, scale=scale)
            else:
                replacement = nn.Sequential(child, Dropout(p, scale=scale))
            setattr(module, name, replacement)
            count += 1
        else:
            count += _rewrite(child, p, after, scale)
    return count


def insert_dropout(model: nn.Module, p: float = 0.5, p_input: float | None = None, *,
                   after: type[nn.Module] | Sequence[type[nn.Module]] = (nn.ReLU,),
                   scale: str = "train") -> nn.Module:
    """A copy of ``model`` with dropout after each activation module of the types ``after``.

    The original model is left untouched (the copy is a ``copy.deepcopy``; its weights start
    equal to the original's). Nested modules (``Sequential`` inside custom blocks, ``ModuleList``,
    ...) are searched to any depth. An activation module used several times in ``forward``
    gets an independent mask at each use, as separate dropout layers would.

    Args:
        model: Any ``nn.Module`` whose activations are modules (``nn.ReLU()``, ``nn.GELU()``...).
        p: Drop probability after each matching activation (the paper's retention is 1 − p;
            §A.4 suggests retention 0.5–0.8 for hidden units, i.e. ``p`` in 0.2–0.5).
        p_input: Drop probability of the inputs; when set, the copy is
            ``nn.Sequential(Dropout(p_input), model_copy)`` (parameter names gain a ``1.``
            prefix). None (default) drops no inputs.
        after: The activation class(es) dropout goes after. An exact ``nn.ReLU`` becomes one
            :class:`ReLUDropout`; any other match becomes ``Sequential(activation, Dropout)``.
        scale: ``"train"`` (inverted dropout) or ``"test"`` (the paper's test-time scaling).

    Returns:
        The new model, in the mode (train/eval) the original was in.

    Raises:
        ValueError: ``p``/``p_input`` not in [0, 1), bad ``after``, or ``p > 0`` and the model
            has no activation module of those types (activations called as functions in
            ``forward`` cannot be found).

    Example:
        >>> import torch.nn as nn, dropoutlab as dl
        >>> net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> dl.insert_dropout(net, p=0.5, p_input=0.2)[1][1]
        ReLUDropout(relu, p=0.5, scale='train')
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    p = _check_p("p", p)
    p_in = None if p_input is None else _check_p("p_input", p_input)
    types = _check_after(after)
    if scale not in ("train", "test"):
        raise ValueError(f"`scale` must be 'train' or 'test', got scale={scale!r}")
    new = copy.deepcopy(model)
    if p > 0:
        if isinstance(new, types) and not isinstance(new, Dropout):
            raise ValueError("`model` is itself an activation; wrap it in a network first")
        if _rewrite(new, p, types, scale) == 0:
            names = ", ".join(t.__name__ for t in types)
            raise ValueError(f"`model` has no activation module of type {names} to put dropout "
                             "after (activations called as functions in forward() cannot be "
                             "found); pass `after=` with the activation classes it uses")
    if p_in is not None and p_in > 0:
        new = nn.Sequential(Dropout(p_in, scale=scale), new)
    new.train(model.training)
    return new
