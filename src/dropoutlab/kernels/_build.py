"""Compile ``dropout.c`` on first use, cache the shared library, and load it with ctypes.

Why compile at run time: the kernels need no torch headers, so there is no build step inside
pip's isolated build environment (which would resolve a multi-GB CUDA torch), and ``-march=native``
tunes them to the machine they run on. One build takes about a second; later processes load the
cached library in milliseconds.

The cache lives in ``$DROPOUTLAB_CACHE`` (default ``~/.cache/dropoutlab``), one file per
(source, flags, compiler version, CPU) so that a home directory shared between different machines
never loads a library built for another CPU. Libraries are written to a temporary name and
renamed into place, so concurrent processes never see a half-written file.

The compiler is ``$DROPOUTLAB_CC``, else ``$CC``, else ``cc``. Flag sets are tried from fastest to
most portable (OpenMP and ``-march=native`` are dropped if the compiler rejects them); if none
builds, :class:`KernelBuildError` carries the compiler's messages.

:func:`build_ops` builds the second library, ``ops.cpp`` linked with the same ``dropout.c``: the
kernels registered as torch operators. It needs torch's C++ headers (shipped in every torch
wheel) and a C++ compiler (``$DROPOUTLAB_CXX``, else ``$CXX``, else ``c++``). Torch's headers make
this build much slower than the C one, so it too runs once per (sources, flags, compilers, torch
version, CPU) and is cached beside the C library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dropoutlab.cache_trust import trusted_cache_dir, untrusted_reason

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("dropout.c")
OPS_SOURCE = Path(__file__).with_name("ops.cpp")
ABI_VERSION = 6  # must match dl_abi_version() in dropout.c

_BASE_FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-fno-math-errno", "-ffp-contract=off")
# Fastest first. -ffp-contract=off keeps every lane and the scalar tail bit-identical.
# -mprefer-vector-width=512: GCC and Clang default to 256-bit vectors even where AVX-512 exists;
# the 64-bit multiplies of the hash run on 512-bit ones in fewer instructions (the same bits:
# every operation is elementwise IEEE or integer). A no-op without AVX-512.
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-march=native", "-mprefer-vector-width=512", "-fopenmp"),
    ("-march=native", "-fopenmp"),
    ("-fopenmp",),
    ("-march=native",),
    (),
)



class KernelBuildError(RuntimeError):
    """The native kernels could not be compiled or loaded; the message says why."""


@dataclass(frozen=True)
class Library:
    """A loaded kernel library and how it was built."""

    path: Path
    flags: tuple[str, ...]
    compiler: str
    handle: ctypes.CDLL

    @property
    def openmp(self) -> bool:
        """Whether the library splits work across threads."""
        return "-fopenmp" in self.flags


def cache_dir() -> Path:
    """Directory holding compiled kernels: ``$DROPOUTLAB_CACHE/kernels`` (default
    ``~/.cache/dropoutlab/kernels``) when it is trusted (:mod:`dropoutlab.cache_trust`: owned
    by this user, writable by no one else), else a private per-user folder, with a warning."""
    root = os.environ.get("DROPOUTLAB_CACHE") or os.path.join("~", ".cache", "dropoutlab")
    return _trusted_dir(str(Path(root).expanduser() / "kernels"))


@functools.lru_cache(maxsize=8)
def _trusted_dir(preferred: str) -> Path:
    """:func:`~dropoutlab.cache_trust.trusted_cache_dir`, once per folder (one warning)."""
    return trusted_cache_dir(preferred)


def compiler() -> str:
    """The C compiler command: ``$DROPOUTLAB_CC``, else ``$CC``, else ``cc``."""
    return os.environ.get("DROPOUTLAB_CC") or os.environ.get("CC") or "cc"


def cxx_compiler() -> str:
    """The C++ compiler command: ``$DROPOUTLAB_CXX``, else ``$CXX``, else ``c++``."""
    return os.environ.get("DROPOUTLAB_CXX") or os.environ.get("CXX") or "c++"


def _cpu_fingerprint() -> str:
    """Model and feature flags of this CPU, so -march=native builds are never shared."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    text += line
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        pass
    return text


def _compiler_version(cc: str) -> str:
    try:
        done = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise KernelBuildError(f"C compiler {cc!r} cannot be run: {err}") from err
    if done.returncode != 0:
        raise KernelBuildError(f"C compiler {cc!r} --version failed: {done.stderr.strip()}")
    return done.stdout


def _library_path(cc: str, version: str, flags: tuple[str, ...]) -> Path:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cc.encode(), version.encode(), " ".join(flags).encode()):
        digest.update(part)
        digest.update(b"\0")
    if "-march=native" in flags:
        digest.update(_cpu_fingerprint().encode())
    return cache_dir() / f"dropout-{digest.hexdigest()[:20]}.so"


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> None:
    """Compile into a temporary file next to ``target`` and rename it into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cc, *_BASE_FLAGS, *flags, str(SOURCE), "-o", tmp_name, "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise KernelBuildError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _declare(handle: ctypes.CDLL) -> None:
    """Give every exported function its C signature (ctypes checks arguments against it)."""
    i64, u64, u32, cint = ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int
    ptr = ctypes.c_void_p
    signatures: dict[str, list[type]] = {
        "dl_dropout_f32": [ptr, ptr, i64, u64, u32, ctypes.c_float, cint],
        "dl_dropout_f64": [ptr, ptr, i64, u64, u32, ctypes.c_double, cint],
        "dl_gaussian_f32": [ptr, ptr, i64, u64, ctypes.c_float, cint],
        "dl_gaussian_f64": [ptr, ptr, i64, u64, ctypes.c_double, cint],
        "dl_relu_dropout_f32": [ptr, ptr, i64, u64, u32, ctypes.c_float, cint],
        "dl_relu_dropout_f64": [ptr, ptr, i64, u64, u32, ctypes.c_double, cint],
        "dl_relu_dropout_grad_f32": [ptr, ptr, ptr, i64, u64, u32, ctypes.c_float, cint],
        "dl_relu_dropout_grad_f64": [ptr, ptr, ptr, i64, u64, u32, ctypes.c_double, cint],
        "dl_sgd_f32": [ptr, ptr, ptr, i64, ctypes.c_float, ctypes.c_float, ctypes.c_float, cint],
        "dl_sgd_f64": [ptr, ptr, ptr, i64, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                       cint],
        "dl_sgd_bf16_f32": [ptr, ptr, ptr, ptr, i64, ctypes.c_float, ctypes.c_float,
                            ctypes.c_float, cint],
        "dl_words": [u64, i64, i64, ptr],
    }
    for suffix in ("bf16", "f16"):  # 16-bit storage, float parameters
        signatures[f"dl_dropout_{suffix}"] = signatures["dl_dropout_f32"]
        signatures[f"dl_gaussian_{suffix}"] = signatures["dl_gaussian_f32"]
        signatures[f"dl_relu_dropout_{suffix}"] = signatures["dl_relu_dropout_f32"]
        signatures[f"dl_relu_dropout_grad_{suffix}"] = signatures["dl_relu_dropout_grad_f32"]
    for name, argtypes in signatures.items():
        fn = getattr(handle, name)
        fn.argtypes = argtypes
        fn.restype = None
    handle.dl_set_huge_pages.argtypes = [cint]
    handle.dl_set_huge_pages.restype = None
    for name in ("dl_abi_version", "dl_huge_pages"):
        getattr(handle, name).argtypes = []
        getattr(handle, name).restype = cint


def _load(path: Path) -> ctypes.CDLL:
    try:
        handle = ctypes.CDLL(str(path))
    except OSError as err:
        raise KernelBuildError(f"cannot load {path}: {err}") from err
    _declare(handle)
    if handle.dl_abi_version() != ABI_VERSION:
        raise KernelBuildError(f"{path} has ABI {handle.dl_abi_version()}, need {ABI_VERSION}")
    return handle


def build() -> Library:
    """Return the kernel library, compiling it first if no cached build matches.

    Raises:
        KernelBuildError: no compiler, every flag set failed, or the library does not load.
    """
    cc = compiler()
    if shutil.which(cc) is None:
        raise KernelBuildError(
            f"no C compiler: {cc!r} is not on PATH (set DROPOUTLAB_CC or CC, or install gcc)"
        )
    version = _compiler_version(cc)
    failures: list[str] = []
    for extra in _FLAG_SETS:
        path = _library_path(cc, version, extra)
        try:
            if not path.exists() or untrusted_reason(path) is not None:
                logger.info("compiling dropout kernels: %s %s", cc, " ".join(extra))
                _compile(cc, extra, path)
            return Library(path=path, flags=_BASE_FLAGS + extra, compiler=cc, handle=_load(path))
        except (KernelBuildError, OSError, subprocess.SubprocessError) as err:
            failures.append(str(err))
    raise KernelBuildError("could not build the dropout kernels:\n" + "\n".join(failures))


def _torch_build_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags for code that includes torch's C++ headers."""
    import torch

    root = Path(torch.__file__).parent
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    include = root / "include"
    compile_flags = ["-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-w",
                     f"-I{include}", f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}"]
    lib = root / "lib"
    link_flags = [f"-L{lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib}"]
    return compile_flags, link_flags


def build_ops(c_library: Library) -> Path:
    """Return the path of the operator library (``ops.cpp`` + ``dropout.c``), compiling it first
    if no cached build matches. ``dropout.c`` is compiled with the flags ``c_library`` was built
    with, so both libraries compute the same bits.

    Raises:
        KernelBuildError: no C++ compiler, or the build failed (the message has its output).
    """
    import torch

    cxx = cxx_compiler()
    if shutil.which(cxx) is None:
        raise KernelBuildError(
            f"no C++ compiler: {cxx!r} is not on PATH (set DROPOUTLAB_CXX or CXX, or install g++)"
        )
    extra = tuple(f for f in c_library.flags if f not in _BASE_FLAGS)
    compile_flags, link_flags = _torch_build_flags()
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), OPS_SOURCE.read_bytes(), c_library.compiler.encode(),
                 _compiler_version(c_library.compiler).encode(), cxx.encode(),
                 _compiler_version(cxx).encode(), " ".join(extra).encode(),
                 " ".join(compile_flags + link_flags).encode(), torch.__version__.encode()):
        digest.update(part)
        digest.update(b"\0")
    if "-march=native" in extra:
        digest.update(_cpu_fingerprint().encode())
    target = cache_dir() / f"ops-{digest.hexdigest()[:20]}.so"
    if target.exists() and untrusted_reason(target) is None:
        return target
    logger.info("compiling dropout operators: %s", cxx)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ops.", dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "dropout.o", Path(tmp) / "ops.so"
        c_cmd = [c_library.compiler, *[f for f in _BASE_FLAGS if f != "-shared"], *extra,
                 "-c", str(SOURCE), "-o", str(obj)]
        openmp = ["-fopenmp"] if "-fopenmp" in extra else []
        cxx_cmd = [cxx, "-O3", "-shared", "-fPIC", *compile_flags, str(OPS_SOURCE), str(obj),
                   "-o", str(lib), *openmp, *link_flags, "-lm"]
        for cmd in (c_cmd, cxx_cmd):
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                      check=False)
            except (OSError, subprocess.SubprocessError) as err:
                raise KernelBuildError(f"`{' '.join(cmd)}` could not run: {err}") from err
            if done.returncode != 0:
                raise KernelBuildError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()}")
        os.replace(lib, target)
    return target
