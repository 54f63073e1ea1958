"""Keep freed memory in the process, so large tensors stop page-faulting on every allocation.

torch's CPU tensors come from the C library's ``malloc``. glibc hands blocks above its mmap
threshold (128 KiB, rising to at most 32 MiB) straight to the kernel and returns them on
``free``; it gives back free memory at the top of its heap too. The next tensor of that size
then costs one page fault per 4 KiB page, and the kernel zeroes every page before the first
write. Training allocates the same tensors every step (activations, outputs, gradients), so a
process can spend more time in the kernel than in a dropout pass. On a 2-core VM,
``dropoutlab bench`` ran the 4096×4096 float32 dropout forward+backward at 0.66-1.37 G
elements/s on fresh memory and at 1.99-2.51 with freed memory kept.

:func:`keep_freed_memory` raises both glibc thresholds, so freed blocks stay in the heap for the
next allocation, as torch's CUDA caching allocator does on the GPU. The cost is memory: the
process keeps up to its peak heap instead of shrinking after it. The ``dropoutlab`` command and
its sweep worker processes call it at start; a library user may call it in their own process.
The environment variable ``DROPOUTLAB_KEEP_FREED_MEMORY=0`` turns it off everywhere.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENV_VAR", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "describe", "freed_memory_kept",
           "keep_freed_memory"]

ENV_VAR = "DROPOUTLAB_KEEP_FREED_MEMORY"
MMAP_THRESHOLD = 256 << 20  # blocks up to 256 MiB come from (and go back to) the heap
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top is returned only beyond 1 GiB
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_applied = False  # whether this process has the setting


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed blocks for reuse in this process (see module doc).

    Returns:
        True when the setting was applied; False where it does not apply (not glibc), where
        ``DROPOUTLAB_KEEP_FREED_MEMORY`` is ``0``, or where glibc refused a value. Calling it
        again is harmless.

    Raises:
        ValueError: ``DROPOUTLAB_KEEP_FREED_MEMORY`` is set to something other than 0 or 1.
    """
    setting = _setting()
    if setting not in ("0", "1"):
        raise ValueError(f"environment variable {ENV_VAR} must be 0 or 1, got {setting!r}")
    if setting == "0" or not _glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    global _applied
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    _applied = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mmap_set
    kernels = sys.modules.get("dropoutlab.kernels")  # loaded already: its page hint follows
    if kernels is not None:
        kernels.sync_huge_pages()
    return _applied


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has applied its setting in this process."""
    return _applied


def describe() -> str:
    """One line for ``dropoutlab info`` and the benchmark header: what this process does."""
    if _applied:
        return (f"kept for reuse (glibc heap for blocks up to {MMAP_THRESHOLD >> 20} MiB, "
                f"trimmed beyond {TRIM_THRESHOLD >> 30} GiB free)")
    if _setting() == "0":
        return f"returned to the system ({ENV_VAR}=0)"
    return "the C library's default" + ("" if _glibc() else " (not glibc)")


def _setting() -> str:
    """The value of ``DROPOUTLAB_KEEP_FREED_MEMORY`` (default ``"1"``), stripped."""
    return os.environ.get(ENV_VAR, "1").strip()


def _glibc() -> bool:
    """Whether this process runs on GNU libc (the only C library whose knobs this sets)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # no confstr, or the name is unknown here
        return False
