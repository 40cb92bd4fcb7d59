"""Build and load the native kernels: a small C library compiled once per machine.

The C source has no PyTorch headers, so it compiles in about a second with the system C
compiler; the result is kept in ``$PREDCODE_CACHE/native`` (default
``~/.cache/predcode/native``) under a key made of the source, the compiler, the flags and
the CPU, written atomically, so concurrent processes and later runs reuse it.
``bash scripts/setup.sh`` builds it at install time (``python -m predcode.native``).

The matrix products go to the BLAS PyTorch itself links (its Fortran ``sgemm_`` /
``dgemm_``), so the kernel uses the same BLAS and thread count as ``torch.mm``.  Where any
of this is missing (no C compiler, a PyTorch build that does not export a BLAS, a platform
other than Linux or macOS) :func:`load` says why in one line and the caller keeps the
PyTorch path.  ``PREDCODE_NATIVE=0`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCES = ("dense_chain.c", "dense_chain.h")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")
ABI = 1
ENV_SWITCH = "PREDCODE_NATIVE"
CACHE_ENV_VAR = "PREDCODE_CACHE"


class NativeUnavailable(RuntimeError):
    """Why the native kernels cannot be used here (one line, with the remedy)."""


@dataclass(frozen=True)
class Native:
    """The loaded kernel library and the BLAS routines it calls."""

    library: ctypes.CDLL
    sgemm: int  # address of the Fortran sgemm_
    dgemm: int  # address of the Fortran dgemm_
    path: Path


def enabled() -> bool:
    """Whether the native kernels may be used (``PREDCODE_NATIVE`` is not ``0``)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """``$PREDCODE_CACHE/native``, else ``$XDG_CACHE_HOME/predcode/native``, else
    ``~/.cache/predcode/native``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser() / "native"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "predcode" / "native"


def compiler() -> str | None:
    """``$CC``, else the first of ``cc``, ``gcc``, ``clang`` on the PATH."""
    if os.environ.get("CC"):
        return os.environ["CC"]
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def _cpu_fingerprint() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(lines))


def _key(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[:1]
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    for part in (*FLAGS, *version, _cpu_fingerprint(), platform.machine(), str(ABI)):
        digest.update(part.encode())
    return digest.hexdigest()[:20]


def library_path() -> Path:
    """Where the kernel library for this machine, compiler and source lives (built or not)."""
    cc = compiler()
    if cc is None:
        raise NativeUnavailable(
            "no C compiler found for predcode's native kernels; install "
            "gcc (or set CC), or set PREDCODE_NATIVE=0 to use PyTorch only"
        )
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    try:
        key = _key(cc)
    except (OSError, subprocess.SubprocessError) as why:
        raise NativeUnavailable(
            f"the C compiler '{cc}' does not run ({why}); install gcc "
            "(or set CC), or set PREDCODE_NATIVE=0 to use PyTorch only"
        ) from None
    return cache_dir() / f"predcode_native_{key}{suffix}"


def build(path: Path | None = None) -> Path:
    """Compile the kernel library into the cache (a no-op when it is there already)."""
    path = path or library_path()
    if path.exists():
        return path
    if sys.platform not in ("linux", "darwin"):
        raise NativeUnavailable(
            f"predcode's native kernels are built on Linux and macOS, not {sys.platform}; the PyTorch path runs instead"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    cc = compiler()
    if cc is None:  # library_path() found one; it has gone since
        raise NativeUnavailable(
            "no C compiler found for predcode's native kernels; install "
            "gcc (or set CC), or set PREDCODE_NATIVE=0 to use PyTorch only"
        )
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=".building-")
    os.close(fd)
    try:
        try:
            done = subprocess.run(
                [cc, *FLAGS, "-o", tmp, str(here / "dense_chain.c"), "-lm"], capture_output=True, text=True, timeout=300
            )
        except (OSError, subprocess.SubprocessError) as why:
            raise NativeUnavailable(
                f"the C compiler '{compiler()}' does not run ({why}); the "
                "PyTorch path runs instead (install gcc or set CC; "
                "PREDCODE_NATIVE=0 hides this)"
            ) from None
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["(no message)"])[0]
            raise NativeUnavailable(
                f"compiling predcode's native kernels failed ({first}); "
                "the PyTorch path runs instead (PREDCODE_NATIVE=0 hides this)"
            )
        os.replace(tmp, path)  # atomic: a concurrent process sees no half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _blas() -> tuple[int, int]:
    """The addresses of the Fortran ``sgemm_`` and ``dgemm_`` that PyTorch links."""
    lib_dir = Path(torch.__file__).parent / "lib"
    names = ["libtorch_cpu.so", "libtorch_cpu.dylib", "libtorch.so"]
    for name in names:
        candidate = lib_dir / name
        if not candidate.exists():
            continue
        lib = ctypes.CDLL(str(candidate))
        try:
            sgemm = ctypes.cast(lib.sgemm_, ctypes.c_void_p).value
            dgemm = ctypes.cast(lib.dgemm_, ctypes.c_void_p).value
        except AttributeError:
            continue
        if sgemm and dgemm:  # a found symbol has a non-null address
            return sgemm, dgemm
    raise NativeUnavailable(
        "this PyTorch build exports no BLAS gemm for predcode's native "
        "kernels; the PyTorch path runs instead (PREDCODE_NATIVE=0 hides this)"
    )


def load() -> Native:
    """Build (if needed) and load the kernels; :class:`NativeUnavailable` says why not."""
    if not enabled():
        raise NativeUnavailable("predcode's native kernels are off (PREDCODE_NATIVE=0)")
    sgemm, dgemm = _blas()
    path = build()
    library = ctypes.CDLL(str(path))
    if library.predcode_native_abi() != ABI:
        raise NativeUnavailable(f"{path} is a stale build; delete it and run again")
    return Native(library, sgemm, dgemm, path)
