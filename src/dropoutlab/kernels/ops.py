"""What torch's compilers and transforms need to know about the ``dropoutlab::*`` operators.

The operators and their CPU and autograd kernels are C++ (``ops.cpp``). Registered here, once
the library is loaded:

* a fake (meta) implementation of each, so ``torch.compile``, ``torch.export`` and AOT autograd
  know the output's shape, dtype and strides without running the kernel;
* a vmap rule of each, so ``torch.vmap`` works. As with torch's own random ops, ``vmap`` refuses
  the seed draw under its default ``randomness="error"``; ``"same"`` draws one seed (every sample
  gets the same mask), ``"different"`` draws one per sample, in order;
* the seed draw joins the random ops that AOT autograd's common-subexpression pass leaves alone:
  without that, two dropout calls on the same tensor in one compiled graph would share a mask.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["register"]

_FORWARD = ("dropout", "gaussian", "relu_dropout")


def _fake_like(x: torch.Tensor, *args: Any) -> torch.Tensor:
    """Output of a noise op: x's shape and dtype, in the memory format the kernel walks."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for dims, fmt in ((4, torch.channels_last), (5, torch.channels_last_3d)):
        if x.dim() == dims and x.is_contiguous(memory_format=fmt):
            return torch.empty_like(x, memory_format=fmt)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _fake_seed(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.empty((), dtype=torch.int64, device=x.device)


def _fake_relu_backward(grad: torch.Tensor, x: torch.Tensor, *args: Any) -> torch.Tensor:
    return _fake_like(x)


def _vmap_seed(info: Any, in_dims: Any, x: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, int | None]:
    if info.randomness == "same":
        return torch.ops.dropoutlab.seed.default(x, generator), None
    if info.randomness == "different":
        seeds = [torch.ops.dropoutlab.seed.default(x, generator) for _ in range(info.batch_size)]
        return torch.stack(seeds), 0
    raise RuntimeError(
        "vmap: dropoutlab's dropout draws random numbers, so torch.vmap needs "
        f"`randomness` set to 'same' or 'different', got randomness={info.randomness!r} "
        "(torch's own random ops refuse it likewise)"
    )


def _vmap_loop(name: str) -> Any:
    """A vmap rule that calls the op once per sample: bitwise the unbatched results."""
    op = getattr(torch.ops.dropoutlab, name).default

    def rule(info: Any, in_dims: Any, *args: Any) -> tuple[torch.Tensor, int]:
        outs = []
        for b in range(info.batch_size):
            sample = [a if d is None else a.select(d, b) for a, d in zip(args, in_dims,
                                                                       strict=False)]
            outs.append(op(*sample))
        return torch.stack(outs), 0

    return rule


def _vmap_draw(name: str) -> Any:
    """A vmap rule for ``draw_<name>`` (seed draw + op): the seed follows ``randomness`` as in
    :func:`_vmap_seed`, then the op runs once per sample, as the two operators' rules would."""
    op = getattr(torch.ops.dropoutlab, name).default
    n_params = 1 if name == "gaussian" else 2  # sigma, or p and factor

    def rule(info: Any, in_dims: Any, x: torch.Tensor, *rest: Any,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        params = rest[:n_params]
        if len(rest) > n_params:
            generator = rest[n_params]
        seed, seed_dim = _vmap_seed(info, in_dims[:1], x, generator)
        x_dim = in_dims[0]
        outs = []
        for b in range(info.batch_size):
            sample = x if x_dim is None else x.select(x_dim, b)
            outs.append(op(sample, seed if seed_dim is None else seed[b], *params))
        return torch.stack(outs), 0

    return rule


def register() -> None:
    """Register fake implementations and vmap rules (once, after ``ops.cpp`` is loaded)."""
    for name in _FORWARD:
        torch.library.register_fake(f"dropoutlab::{name}")(_fake_like)
        torch.library.register_vmap(f"dropoutlab::{name}")(_vmap_loop(name))
    torch.library.register_fake("dropoutlab::relu_dropout_backward")(_fake_relu_backward)
    torch.library.register_vmap("dropoutlab::relu_dropout_backward")(
        _vmap_loop("relu_dropout_backward"))
    for name in _FORWARD:
        torch.library.register_vmap(f"dropoutlab::draw_{name}")(_vmap_draw(name))
    torch.library.register_fake("dropoutlab::seed")(_fake_seed)
    torch.library.register_vmap("dropoutlab::seed")(_vmap_seed)
    try:  # AOT autograd's CSE skips the ops in this list (private; a test checks the effect)
        from torch._functorch import compile_utils

        if torch.ops.dropoutlab.seed not in compile_utils.rand_ops:
            compile_utils.rand_ops.append(torch.ops.dropoutlab.seed)
    except (ImportError, AttributeError):
        pass
