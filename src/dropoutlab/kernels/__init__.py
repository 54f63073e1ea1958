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

The dropout kernels are registered as PyTorch operators (``dropoutlab::seed``, ``::dropout``,
``::gaussian``, ``::relu_dropout``; C++ in ``ops.cpp``, fake implementations and vmap rules in
:mod:`dropoutlab.kernels.ops`), so the dispatcher, not Python, runs them: ``torch.compile``
(with ``fullgraph=True``), ``torch.export``, AOT autograd and ``torch.func`` each see one opaque
operator per call, and eager calls cost about what an ATen operator costs. The seed draw is an
operator of its own, so a compiled graph draws from torch's global generator exactly as eager
code does: the same ``torch.manual_seed`` gives the same masks, compiled or not.

The C library (loaded with ctypes) also has the one-pass momentum update of
:class:`dropoutlab.recipe.MomentumSGD` (:func:`momentum_step_`), bitwise equal to its three
``torch._foreach_*`` passes, and its bf16 mixed-precision form (:func:`momentum_step_bf16_`).

The masks are *statistically* equivalent to the reference path in :mod:`dropoutlab.backend`, not
bitwise equal to it. float32, float64, bfloat16 and float16 CPU tensors are handled natively
(:func:`supports` says which); a 16-bit input is computed in float32 and rounded once, so its
mask is the float32 mask for the same seed and its values are the float32 kernel's values on
the widened input, rounded to nearest even. Other dtypes use the reference path. The sources
are compiled on first use (:mod:`dropoutlab.kernels._build`): the C library, then the operators
(which need a C++ compiler). If the C build fails, :func:`available` is False and
:func:`require` raises with the compiler's reason; if either fails, :func:`operators_available`
is False, :func:`require_operators` raises, and the ``"auto"`` backend quietly uses torch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dropoutlab import allocator
from dropoutlab.cache_trust import UntrustedPathError, check_trusted
from dropoutlab.kernels._build import KernelBuildError, Library, build, build_ops

__all__ = [
    "KernelBuildError",
    "available",
    "drop_threshold",
    "dropout",
    "gaussian_dropout",
    "library",
    "momentum_step_",
    "momentum_step_bf16_",
    "operators_available",
    "relu_dropout",
    "require",
    "require_operators",
    "reset",
    "supports",
]

logger = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)  # the dropout operators
_SGD_DTYPES = (torch.float32, torch.float64)  # the one-pass momentum update
_TWO_32 = 1 << 32

_lock = threading.Lock()
_library: Library | None = None
_error: str | None = None
_attempted = False
_functions: dict[tuple[str, torch.dtype], Any] = {}  # (kind, dtype) -> C entry point
_ops_error: str | None = None
OPS_ABI_VERSION = 3  # must match abi_version() in ops.cpp


@dataclass(frozen=True)
class _Operators:
    """The registered ``dropoutlab::*`` operators (``ops.cpp``), looked up once."""

    seed: Any
    dropout: Any
    gaussian: Any
    relu_dropout: Any
    draw_dropout: Any  # seed + dropout in one call
    draw_gaussian: Any
    draw_relu_dropout: Any


_operators: _Operators | None = None  # loaded once per process: a namespace registers once


def _bind(lib: Library) -> None:
    """Look up every C entry point once, keyed by (kind, dtype)."""
    for kind in ("dropout", "gaussian", "relu_dropout", "relu_dropout_grad", "sgd"):
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            _functions[kind, dtype] = getattr(lib.handle, f"dl_{kind}_{suffix}")
    _functions["sgd_bf16", torch.float32] = lib.handle.dl_sgd_bf16_f32


def _load_operators(lib: Library) -> None:
    """Build (or find cached) and register the operator library once per process."""
    global _operators, _ops_error
    if _operators is not None:
        return
    try:
        path = check_trusted(build_ops(lib), "the operator library")
        torch.ops.load_library(str(path))
        found = torch.ops.dropoutlab.abi_version()
        if found != OPS_ABI_VERSION:
            raise KernelBuildError(f"{path} has operator ABI {found}, need {OPS_ABI_VERSION}")
        from dropoutlab.kernels import ops

        ops.register()
        namespace = torch.ops.dropoutlab
        _operators = _Operators(
            seed=namespace.seed.default,
            dropout=namespace.dropout.default,
            gaussian=namespace.gaussian.default,
            relu_dropout=namespace.relu_dropout.default,
            draw_dropout=namespace.draw_dropout.default,
            draw_gaussian=namespace.draw_gaussian.default,
            draw_relu_dropout=namespace.draw_relu_dropout.default,
        )
        _ops_error = None
    except (KernelBuildError, OSError, RuntimeError, UntrustedPathError) as err:
        _ops_error = str(err)
        logger.debug("dropout operators unavailable, using torch: %s", err)


def _load() -> Library | None:
    """Build or load the libraries once per process; remember the failure reason."""
    global _library, _error, _attempted
    if not _attempted:
        with _lock:
            if not _attempted:
                try:
                    _library = build()
                    _bind(_library)
                    sync_huge_pages()
                    _load_operators(_library)
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


@torch.compiler.assume_constant_result
def operators_available() -> bool:
    """Whether the dropout operators are registered (built or buildable, and loaded).

    Under ``torch.compile`` this is evaluated once while tracing, so a first call inside a
    compiled function loads the library without breaking the graph.
    """
    if _operators is not None and _library is not None:
        return True  # loaded: the common case, without a call
    return _load() is not None and _operators is not None


def require() -> Library:
    """Return the loaded kernel library.

    Raises:
        KernelBuildError: the kernels cannot be built here; the message has the compiler output.
    """
    lib = _load()
    if lib is None:
        raise KernelBuildError(f"the native dropout kernels are not available: {_error}")
    return lib


def require_operators() -> None:
    """Raise unless the dropout operators are registered.

    Raises:
        KernelBuildError: the C or C++ build failed here; the message has the compiler output.
    """
    require()
    if _operators is None:
        raise KernelBuildError(f"the native dropout operators are not available: {_ops_error}")


def _ops() -> _Operators:
    if _operators is None:
        require_operators()
    assert _operators is not None
    return _operators


def library() -> Library | None:
    """The loaded library (path, flags, compiler), or None when unavailable."""
    return _load()


def reset() -> None:
    """Forget the loaded library so the next call rebuilds (for tests and after changing $CC).

    The registered operators stay: torch registers an operator namespace once per process.
    """
    global _library, _error, _attempted
    with _lock:
        _library, _error, _attempted = None, None, False
        _functions.clear()


def supports(x: torch.Tensor) -> bool:
    """Whether the native kernels handle ``x``: a strided float32, float64, bfloat16 or float16
    CPU tensor.

    Fake tensors (torch.compile, torch.export) and functorch wrappers (``torch.func.grad``,
    ``vmap``) qualify: the operators have fake implementations and vmap rules. Other dtypes and
    devices use the reference path, as does ``torch.jit.trace``.
    """
    return (
        x.is_cpu
        and x.dtype in _DTYPES
        and x.layout == torch.strided
        and not torch.jit.is_tracing()
    )


_GENERATOR_UNDER_COMPILE = (
    "`generator=` cannot enter a torch.compile graph: Dynamo cannot pass a torch.Generator into "
    "one (nor into torch's own random ops). Seed torch's global generator with "
    "torch.manual_seed instead (the same masks compiled and eager), or compile without "
    "fullgraph=True so the seed is drawn from the generator outside the graph"
)


@torch.compiler.disable(reason=_GENERATOR_UNDER_COMPILE)
def _seed_outside_graph(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The seed draw, run eagerly between two compiled graphs (a graph break)."""
    out: torch.Tensor = _ops().seed(x, generator)
    return out


def _generator_in_graph(generator: torch.Generator | None) -> bool:
    """Whether ``generator`` is a torch.Generator that Dynamo is about to trace."""
    return generator is not None and torch.compiler.is_compiling()


def _call(seeded: Any, draw: Any, x: torch.Tensor, generator: torch.Generator | None,
          *params: float) -> torch.Tensor:
    """One dropout operator call: ``draw(x, *params, generator)`` (seed and op in one trip),
    or, when a generator meets a compiled graph, the seed drawn outside it and
    ``seeded(x, seed, *params)``."""
    if _generator_in_graph(generator):
        out: torch.Tensor = seeded(x, _seed_outside_graph(x, generator), *params)
    else:
        out = draw(x, *params, generator)
    return out


def drop_threshold(p: float) -> int:
    """The 32-bit threshold t with P(word < t) = t / 2^32 closest to ``p`` (an element is dropped
    when the high 32 bits of its random word are below t)."""
    return min(round(p * _TWO_32), _TWO_32 - 1)


def dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native Bernoulli dropout (§4): zero each element with probability ``p``, scale the rest.

    Two operators (one call, ``dropoutlab::draw_dropout``): ``dropoutlab::seed`` draws the
    call's seed from ``generator`` (torch's global generator when ``None``) exactly as earlier
    releases did, ``dropoutlab::dropout`` applies the mask it defines. Backward regenerates the
    mask from the seed.

    Args:
        x: float32/float64/bfloat16/float16 CPU tensor of any shape and strides (see
            :func:`supports`).
        p: Drop probability, 0 < p < 1.
        factor: Multiplier of kept elements: 1/(1−p) for inverted dropout, 1 for the paper's
            train-time form.
        generator: Source of the call's seed; ``None`` uses torch's global generator.

    Returns:
        A new tensor of ``x``'s shape and dtype, differentiable in ``x``: contiguous, or
        channels_last(_3d) when ``x`` is.
    """
    ops = _ops()
    return _call(ops.dropout, ops.draw_dropout, x, generator, p, factor)


def relu_dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native ReLU followed by Bernoulli dropout, in one pass: bitwise ``dropout(relu(x))``.

    The mask is the one :func:`dropout` draws with the same generator state, and the gradient is
    bitwise that of the two separate ops. Backward reads the saved input (as ReLU alone saves its
    output: 32 bits per element) and regenerates the mask, so the dropout adds nothing saved.
    Under ``create_graph=True`` backward uses differentiable pieces instead (same values).

    Args:
        x: float32/float64/bfloat16/float16 CPU tensor of any shape and strides (see
            :func:`supports`).
        p: Drop probability, 0 < p < 1.
        factor: Multiplier of kept elements (1/(1−p) inverted, 1 for the paper's form).
        generator: Source of the call's seed; ``None`` uses torch's global generator.

    Returns:
        A new tensor of ``x``'s shape and dtype, differentiable in ``x``.
    """
    ops = _ops()
    return _call(ops.relu_dropout, ops.draw_relu_dropout, x, generator, p, factor)


def gaussian_dropout(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native Gaussian dropout (§10): multiply each element by 1 + σ·z, z ~ N(0, 1).

    Args:
        x: float32/float64/bfloat16/float16 CPU tensor of any shape and strides (see
            :func:`supports`).
        sigma: Standard deviation of the multiplicative noise, sqrt(p/(1−p)).
        generator: Source of the call's seed; ``None`` uses torch's global generator.

    Returns:
        A new tensor of ``x``'s shape and dtype, differentiable in ``x``.
    """
    ops = _ops()
    return _call(ops.gaussian, ops.draw_gaussian, x, generator, sigma)


def momentum_step_(weights: list[torch.Tensor], velocity: list[torch.Tensor],
                   grads: list[torch.Tensor], m: float, s: float,
                   decay: Sequence[float] | None = None) -> bool:
    """One momentum update in place, ``v ← m·v + s·g`` then ``w ← w + v``, in one pass per tensor.

    Bitwise the result of ``torch._foreach_mul_(v, m)``, ``torch._foreach_add_(v, g, alpha=s)``
    and ``torch._foreach_add_(w, v)`` (same operations, same roundings: the second is a fused
    multiply-add), which read and write memory three times where this reads it once.

    ``decay[i]`` (0 when None) is an L2 coefficient λ for tensor i: its gradient first becomes
    ``g + λ·(2w)``, bitwise the gradient autograd gives for the loss plus ``λ·Σw²``
    (:func:`dropoutlab.penalties.l2`), without that penalty's own passes over the weights.

    Returns:
        True when done here; False, having changed nothing, when the kernels are unavailable or
        a tensor is not a contiguous float32/float64 CPU tensor with its partners' dtype and
        size (the caller then takes the ``_foreach`` path).
    """
    if not available():
        return False
    for w, v, g in zip(weights, velocity, grads, strict=True):
        if not (supports(w) and w.dtype in _SGD_DTYPES and w.is_contiguous()
                and v.is_contiguous() and g.is_contiguous()
                and w.dtype == v.dtype == g.dtype and w.numel() == v.numel() == g.numel()
                and v.device.type == g.device.type == "cpu"):
            return False
    threads = torch.get_num_threads()
    decay = [0.0] * len(weights) if decay is None else decay
    for w, v, g, d in zip(weights, velocity, grads, decay, strict=True):
        _functions["sgd", w.dtype](w.data_ptr(), v.data_ptr(), g.data_ptr(), w.numel(), m, s,
                                   d, threads)
        # Written through raw pointers: tell autograd, as an in-place op would, so a graph that
        # saved w or v before this update refuses to backward instead of using the new values.
        torch.autograd.graph.increment_version(w)
        torch.autograd.graph.increment_version(v)
    return True


def momentum_step_bf16_(weights: list[torch.Tensor], velocity: list[torch.Tensor],
                        grads: list[torch.Tensor], copies: list[torch.Tensor], m: float,
                        s: float, decay: Sequence[float] | None = None) -> bool:
    """:func:`momentum_step_` for bfloat16 mixed precision, one pass per tensor: float32
    weights and velocities, bfloat16 gradients, and each weight's bfloat16 working copy
    rewritten from the updated weight (``copies[i] ← weights[i].bfloat16()``).

    Bitwise the float32 update on the widened gradients (plus ``decay[i]·(2w)``, as in
    :func:`momentum_step_`) followed by that cast.

    Returns:
        True when done here; False, having changed nothing, when the kernels are unavailable
        or a tensor is not contiguous on the CPU with the dtypes and sizes above.
    """
    if not available():
        return False
    for w, v, g, c in zip(weights, velocity, grads, copies, strict=True):
        if not (w.dtype == v.dtype == torch.float32 and g.dtype == c.dtype == torch.bfloat16
                and all(t.is_cpu and t.layout == torch.strided and t.is_contiguous()
                        and t.numel() == w.numel() for t in (w, v, g, c))):
            return False
    threads = torch.get_num_threads()
    decay = [0.0] * len(weights) if decay is None else decay
    for w, v, g, c, d in zip(weights, velocity, grads, copies, decay, strict=True):
        _functions["sgd_bf16", torch.float32](w.data_ptr(), v.data_ptr(), g.data_ptr(),
                                              c.data_ptr(), w.numel(), m, s, d, threads)
        for written in (w, v, c):  # as in momentum_step_: tell autograd, as in-place ops would
            torch.autograd.graph.increment_version(written)
    return True
