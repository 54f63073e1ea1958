"""Fast native CPU dropout (Srivastava et al., JMLR 2014, §4 Bernoulli and §10 Gaussian).

torch's CPU ``bernoulli_`` is a serial loop and ``nn.Dropout`` keeps a float32 noise tensor
(32 bits per element) for the backward pass. These kernels instead draw every element's random
word from a counter-based generator (SplitMix64 evaluated at the element's index, see
``dropout.c``), so that:

* the result is the same whatever the thread count, and the work splits across cores (OpenMP,
  sharing torch's thread pool and honouring ``torch.get_num_threads()``);
* the backward pass *regenerates* the mask from a 64-bit seed instead of storing it: nothing
  is saved for backward (0 bits per element). Backward is the same kernel applied to the incoming
  gradient, so higher-order gradients come for free;
* a seeded ``torch.Generator`` reproduces outputs and gradients bitwise: the seed of each call is
  one draw from the generator (or torch's global one).

The same library has the one-pass momentum update of :class:`dropoutlab.recipe.MomentumSGD`
(:func:`momentum_step_`), bitwise equal to its three ``torch._foreach_*`` passes.

The masks are *statistically* equivalent to the reference path in :mod:`dropoutlab.backend`, not
bitwise equal to it. float32 and float64 CPU tensors are handled natively; other dtypes use the
reference path (:func:`supports` says which). The C source is compiled on first use
(:mod:`dropoutlab.kernels._build`); if that fails, :func:`available` is False, :func:`require`
raises with the compiler's reason, and the ``"auto"`` backend quietly uses torch.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from dropoutlab import allocator
from dropoutlab.kernels._build import KernelBuildError, Library, build

__all__ = [
    "KernelBuildError",
    "available",
    "drop_threshold",
    "dropout",
    "gaussian_dropout",
    "library",
    "momentum_step_",
    "relu_dropout",
    "require",
    "reset",
    "supports",
]

logger = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.float64)
_TWO_32 = 1 << 32

_lock = threading.Lock()
_library: Library | None = None
_error: str | None = None
_attempted = False
_functions: dict[tuple[str, torch.dtype], Any] = {}  # (kind, dtype) -> C entry point
_seed = threading.local()  # a reusable int64 scalar per thread for seed draws


def _bind(lib: Library) -> None:
    """Look up every C entry point once, keyed by (kind, dtype)."""
    for kind in ("dropout", "gaussian", "relu_dropout", "relu_dropout_grad", "sgd"):
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            _functions[kind, dtype] = getattr(lib.handle, f"dl_{kind}_{suffix}")


def _load() -> Library | None:
    """Build or load the library once per process; remember the failure reason."""
    global _library, _error, _attempted
    if not _attempted:
        with _lock:
            if not _attempted:
                try:
                    _library = build()
                    _bind(_library)
                    sync_huge_pages()
                except KernelBuildError as err:
                    _error = str(err)
                    logger.debug("native dropout kernels unavailable, using torch: %s", err)
                _attempted = True
    return _library


def sync_huge_pages() -> None:
    """Let the kernels ask for 2 MiB pages on outputs of 8 MiB or more unless this process keeps
    freed memory (:func:`dropoutlab.allocator.keep_freed_memory`, which calls this): reused
    pages gain nothing from the hint, and a growing heap can stall on the compaction it asks
    for. Only speed depends on it, never results. A no-op before the library is loaded (loading
    calls it)."""
    if _library is not None:
        _library.handle.dl_set_huge_pages(0 if allocator.freed_memory_kept() else 1)


def available() -> bool:
    """Whether the native kernels are built (or buildable) and loaded on this machine."""
    return _load() is not None


def require() -> Library:
    """Return the loaded kernel library.

    Raises:
        KernelBuildError: the kernels cannot be built here; the message has the compiler output.
    """
    lib = _load()
    if lib is None:
        raise KernelBuildError(f"the native dropout kernels are not available: {_error}")
    return lib


def library() -> Library | None:
    """The loaded library (path, flags, compiler), or None when unavailable."""
    return _load()


def reset() -> None:
    """Forget the loaded library so the next call rebuilds (for tests and after changing $CC)."""
    global _library, _error, _attempted
    with _lock:
        _library, _error, _attempted = None, None, False
        _functions.clear()


# functorch (vmap/grad) wrappers have no data pointer; None on torch builds without functorch.
_is_functorch_wrapped = getattr(
    getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None
)


def _is_wrapped(x: torch.Tensor) -> bool:
    """Whether ``x`` is a functorch (vmap/grad) wrapper, which has no data pointer."""
    return _is_functorch_wrapped is not None and bool(_is_functorch_wrapped(x))


def supports(x: torch.Tensor) -> bool:
    """Whether the native kernels handle ``x``: a plain strided float32/float64 CPU tensor.

    Tensor subclasses (fake, functorch-wrapped, ...) and other dtypes use the torch path.
    """
    return (
        x.device.type == "cpu"
        and x.dtype in _DTYPES
        and x.layout == torch.strided
        and type(x) in (torch.Tensor, torch.nn.Parameter)
        and not _is_wrapped(x)
        and not torch.jit.is_tracing()
    )


def _draw_seed(generator: torch.Generator | None) -> int:
    """One 63-bit seed from ``generator`` (or torch's global generator)."""
    scalar = getattr(_seed, "tensor", None)
    if scalar is None:
        scalar = _seed.tensor = torch.empty((), dtype=torch.int64)
    return int(scalar.random_(generator=generator))


def _launch(kind: str, x: torch.Tensor, seed: int, *params: Any) -> torch.Tensor:
    """Run one kernel out of place on a contiguous copy of ``x``; returns a new tensor."""
    if not _functions:
        require()
    src = x.contiguous()
    out = torch.empty(src.shape, dtype=src.dtype)
    _functions[kind, src.dtype](
        src.data_ptr(), out.data_ptr(), src.numel(), seed, *params, torch.get_num_threads()
    )
    return out


class _Dropout(torch.autograd.Function):
    """y = x · m · factor with m regenerated from the seed; backward is the same map on dy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, seed: int, thr: int, factor: float) -> torch.Tensor:
        ctx.params = (seed, thr, factor)
        return _launch("dropout", x, seed, thr, factor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        return _bernoulli(grad, *ctx.params), None, None, None


class _Gaussian(torch.autograd.Function):
    """y = x · (1 + σ z) with z regenerated from the seed; backward is the same map on dy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, seed: int, sigma: float) -> torch.Tensor:
        ctx.params = (seed, sigma)
        return _launch("gaussian", x, seed, sigma)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        return _normal(grad, *ctx.params), None, None


class _ReluDropout(torch.autograd.Function):
    """y = relu(x) · m · factor in one pass; backward regenerates m and reads the saved x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, seed: int, thr: int, factor: float) -> torch.Tensor:
        src = x.contiguous()
        ctx.save_for_backward(src)
        ctx.params = (seed, thr, factor)
        return _launch("relu_dropout", src, seed, thr, factor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: the same values from differentiable pieces (the dropout map on
            # the gradient, then ReLU's rule: zero where x <= 0), so higher orders work.
            masked = _bernoulli(grad, *ctx.params)
            zero = torch.zeros((), dtype=masked.dtype)
            return torch.where(x <= 0, zero, masked).view(grad.shape), None, None, None
        g = grad.contiguous()
        if g.dtype != x.dtype:
            g = g.to(x.dtype)
        out = torch.empty(x.shape, dtype=x.dtype)
        _functions["relu_dropout_grad", x.dtype](
            x.data_ptr(), g.data_ptr(), out.data_ptr(), x.numel(), *ctx.params,
            torch.get_num_threads())
        return out, None, None, None


def _bernoulli(x: torch.Tensor, seed: int, thr: int, factor: float) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        out: torch.Tensor = _Dropout.apply(x, seed, thr, factor)
        return out
    return _launch("dropout", x, seed, thr, factor)


def _normal(x: torch.Tensor, seed: int, sigma: float) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        out: torch.Tensor = _Gaussian.apply(x, seed, sigma)
        return out
    return _launch("gaussian", x, seed, sigma)


def drop_threshold(p: float) -> int:
    """The 32-bit threshold t with P(word < t) = t / 2^32 closest to ``p`` (an element is dropped
    when the high 32 bits of its random word are below t)."""
    return min(round(p * _TWO_32), _TWO_32 - 1)


def dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native Bernoulli dropout (§4): zero each element with probability ``p``, scale the rest.

    Args:
        x: float32/float64 CPU tensor of any shape and strides (see :func:`supports`).
        p: Drop probability, 0 < p < 1.
        factor: Multiplier of kept elements: 1/(1−p) for inverted dropout, 1 for the paper's
            train-time form.
        generator: Source of the call's seed; ``None`` uses torch's global generator.

    Returns:
        A new contiguous tensor of ``x``'s shape and dtype, differentiable in ``x``.
    """
    return _bernoulli(x, _draw_seed(generator), drop_threshold(p), factor)


def relu_dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native ReLU followed by Bernoulli dropout, in one pass: bitwise ``dropout(relu(x))``.

    The mask is the one :func:`dropout` draws with the same generator state, and the gradient is
    bitwise that of the two separate ops. Backward reads the saved input (as ReLU alone saves its
    output: 32 bits per element) and regenerates the mask, so the dropout adds nothing saved.
    Under ``create_graph=True`` backward uses differentiable pieces instead (same values).

    Args:
        x: float32/float64 CPU tensor of any shape and strides (see :func:`supports`).
        p: Drop probability, 0 < p < 1.
        factor: Multiplier of kept elements (1/(1−p) inverted, 1 for the paper's form).
        generator: Source of the call's seed; ``None`` uses torch's global generator.

    Returns:
        A new contiguous tensor of ``x``'s shape and dtype, differentiable in ``x``.
    """
    seed, thr = _draw_seed(generator), drop_threshold(p)
    if torch.is_grad_enabled() and x.requires_grad:
        out: torch.Tensor = _ReluDropout.apply(x, seed, thr, factor)
        return out
    return _launch("relu_dropout", x, seed, thr, factor)


def gaussian_dropout(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native Gaussian dropout (§10): multiply each element by 1 + σ·z, z ~ N(0, 1).

    Args:
        x: float32/float64 CPU tensor of any shape and strides (see :func:`supports`).
        sigma: Standard deviation of the multiplicative noise, sqrt(p/(1−p)).
        generator: Source of the call's seed; ``None`` uses torch's global generator.

    Returns:
        A new contiguous tensor of ``x``'s shape and dtype, differentiable in ``x``.
    """
    return _normal(x, _draw_seed(generator), sigma)


def momentum_step_(weights: list[torch.Tensor], velocity: list[torch.Tensor],
                   grads: list[torch.Tensor], m: float, s: float) -> bool:
    """One momentum update in place, ``v ← m·v + s·g`` then ``w ← w + v``, in one pass per tensor.

    Bitwise the result of ``torch._foreach_mul_(v, m)``, ``torch._foreach_add_(v, g, alpha=s)``
    and ``torch._foreach_add_(w, v)`` (same operations, same roundings: the second is a fused
    multiply-add), which read and write memory three times where this reads it once.

    Returns:
        True when done here; False, having changed nothing, when the kernels are unavailable or
        a tensor is not a contiguous float32/float64 CPU tensor with its partners' dtype and
        size (the caller then takes the ``_foreach`` path).
    """
    if not available():
        return False
    for w, v, g in zip(weights, velocity, grads, strict=True):
        if not (supports(w) and w.is_contiguous() and v.is_contiguous() and g.is_contiguous()
                and w.dtype == v.dtype == g.dtype and w.numel() == v.numel() == g.numel()
                and v.device.type == g.device.type == "cpu"):
            return False
    threads = torch.get_num_threads()
    for w, v, g in zip(weights, velocity, grads, strict=True):
        _functions["sgd", w.dtype](w.data_ptr(), v.data_ptr(), g.data_ptr(), w.numel(), m, s,
                                   threads)
        # Written through raw pointers: tell autograd, as an in-place op would, so a graph that
        # saved w or v before this update refuses to backward instead of using the new values.
        torch.autograd.graph.increment_version(w)
        torch.autograd.graph.increment_version(v)
    return True
