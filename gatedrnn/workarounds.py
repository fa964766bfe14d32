"""Workarounds for XLA runtime bugs and costs.

One is applied when ``gatedrnn`` is imported (``apply_on_import``, below), because the bug it
avoids is a hang that a user who never read the docs must not meet; set the environment
variable ``GATEDRNN_KEEP_CPU_SCHEDULER=1`` to keep XLA's default. Scripts may also call
``avoid_cpu_deadlock()`` themselves before their first computation.

Two are opt in, each with an environment variable that applies it at import:
:func:`reuse_cpu_memory` (``GATEDRNN_REUSE_CPU_MEMORY=1``) changes how the whole process
allocates memory, PyTorch's tensors included; :func:`compile_small_loops_whole`
(``GATEDRNN_SMALL_CPU_LOOPS=1``) changes how XLA compiles every small loop of the process.
"""

from __future__ import annotations

import ctypes
import os
import platform
import warnings

from gatedrnn.checks import jax_version

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
OPT_OUT = "GATEDRNN_KEEP_CPU_SCHEDULER"
REUSE_OPT_IN = "GATEDRNN_REUSE_CPU_MEMORY"
SMALL_LOOPS_OPT_IN = "GATEDRNN_SMALL_CPU_LOOPS"
SMALL_LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1


def avoid_cpu_deadlock() -> None:
    """Turns off XLA's concurrency-optimised CPU scheduler by appending
    ``CPU_SCHEDULER_FLAG`` to ``XLA_FLAGS`` (kept once, other flags untouched).

    JAX 0.10.2's CPU runtime can hang forever executing a vmapped LSTM or GRU training
    program with 6-8 seeds (on its second call, sometimes its first): every XLA thread idles
    while one waits in ``tsl::BlockUntilReady``. Without this scheduler it runs. XLA reads
    ``XLA_FLAGS`` when the backend starts, at the first computation, so call this before
    anything computes (after ``import jax`` is fine). GPU and TPU backends ignore the flag.
    It costs a few percent of a training step with one or two seeds (docs/performance.md).
    """
    _append_xla_flag(CPU_SCHEDULER_FLAG, unless=CPU_SCHEDULER_FLAG)


def reuse_cpu_memory(keep_bytes: int = 2**30) -> bool:
    """Makes glibc's ``malloc`` keep the memory a compiled program frees for its next call,
    instead of returning it to the system and faulting it in afresh. Returns whether it was
    applied (``False``, with a warning, where the C library is not glibc).

    XLA's CPU runtime allocates each call's temporaries as one block (155 MB for the LSTM's
    gradient at B=64, T=256, H=256) from one of its own threads. glibc serves a block that
    large with ``mmap`` and unmaps it when freed, so every call touches fresh pages: 38,000
    minor page faults a call there, which the kernel must also zero. This sets glibc's
    ``M_ARENA_MAX`` to 1 (every thread allocates from the main heap, which can grow past the
    64 MiB a thread's own heap may take), ``M_MMAP_MAX`` to 0 (no block is mapped on its own)
    and ``M_TRIM_THRESHOLD`` to ``keep_bytes`` (free memory at the top of the heap is returned
    to the system only beyond that). Batched forward+backward gets faster, a single
    sequence's does not (the figures: docs/performance.md).

    The costs: it applies to the whole process, so memory freed in the middle of the heap
    stays resident until reused (the process ends larger), all threads share one allocator
    lock, and PyTorch's CPU tensors in the same process are served the same way. Call it
    before anything computes: threads that have allocated already keep their own heaps.

    Args:
        keep_bytes: free bytes at the top of the heap kept rather than returned to the
            system, from 0 to ``2**31 - 1`` (a C ``int``); the default 1 GiB.
    """
    if isinstance(keep_bytes, bool) or not isinstance(keep_bytes, int) or not (
            0 <= keep_bytes <= _INT_MAX):
        raise ValueError(f"keep_bytes must be an int from 0 to 2**31 - 1 (a C int), "
                         f"got {keep_bytes!r}")
    other = _not_glibc()
    if other:
        warnings.warn(f"reuse_cpu_memory: the C library here is not glibc ({other}), so "
                      "nothing was changed", RuntimeWarning, stacklevel=2)
        return False
    if _backends_started():
        warnings.warn("reuse_cpu_memory was called after JAX's backend started: XLA's "
                      "threads that have allocated already keep their own heaps, so their "
                      "temporaries may still be mapped and unmapped at every call; call it "
                      "before the first computation", RuntimeWarning, stacklevel=2)
    mallopt = ctypes.CDLL(None).mallopt
    for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                         (_M_TRIM_THRESHOLD, keep_bytes)):
        if mallopt(param, value) != 1:  # glibc returns 1 on success
            raise RuntimeError(f"glibc's mallopt({param}, {value}) failed")
    return True


def compile_small_loops_whole(max_bytes: int = 2_000_000) -> None:
    """Has XLA's CPU compiler build every while loop (a ``lax.scan``, a ``fori_loop``) whose
    one iteration reads and writes fewer than ``max_bytes`` as a single compiled function,
    by appending ``--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=N``
    to ``XLA_FLAGS`` (XLA's default is 1024 bytes). The values are the same.

    XLA's CPU runtime otherwise runs a loop's body as a sequence of separately compiled
    kernels and pays a dispatch for each at every step, which dominates a single sequence's
    short steps; built whole, those loops run faster with the same values. It is not the
    default because it applies to every loop of the process and some run slower as one
    function (the LRU's at a batch of 64, and large single-sequence GRUs): the measurements
    are in docs/performance.md. Call it before anything computes. XLA's GPU compilers do
    not read the option; a TPU's was not checked.

    Args:
        max_bytes: the largest bytes one iteration may access, a positive int; a value in
            ``XLA_FLAGS`` already (yours) is kept.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if _backends_started():
        warnings.warn("compile_small_loops_whole was called after JAX's backend started: "
                      "XLA has read its flags, so nothing changes in this process; call it "
                      "before the first computation", RuntimeWarning, stacklevel=2)
    _append_xla_flag(f"--xla_backend_extra_options={SMALL_LOOP_OPTION}={max_bytes}",
                     unless=SMALL_LOOP_OPTION)


def _append_xla_flag(flag: str, *, unless: str) -> None:
    """Appends ``flag`` to ``XLA_FLAGS`` (other flags untouched) unless ``XLA_FLAGS`` already
    holds ``unless``: the flag itself, or an option the user set to a value of their own."""
    flags = os.environ.get("XLA_FLAGS", "")
    if unless not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def _not_glibc() -> str:
    """``""`` where the C library is glibc on Linux, else what the system is (for a message)."""
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        return ""
    return f"{platform.system()}, {platform.libc_ver()[0] or 'unknown'}"


def _backends_started() -> bool:
    try:  # no public API says whether XLA's backends have started
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def _set(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0")


# the JAX releases whose CPU runtime was seen to hang (docs/upstream/cpu_deadlock/run.py):
# 0.10.2. No older release is known to (the floor versions' tests run without the flag), so
# it is left off there
HANG_MIN_JAX = (0, 10)


def _hang_possible() -> bool:
    """Whether this process may meet the CPU hang: a JAX of ``HANG_MIN_JAX`` or newer whose
    ``JAX_PLATFORMS`` (when set) includes the CPU."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return jax_version() >= HANG_MIN_JAX and (not platforms or "cpu" in platforms.split(","))


def apply_on_import() -> None:
    """What ``import gatedrnn`` does: :func:`reuse_cpu_memory` if ``REUSE_OPT_IN`` is set (to
    anything but ``""`` or ``"0"``), :func:`compile_small_loops_whole` if
    ``SMALL_LOOPS_OPT_IN`` is, then :func:`avoid_cpu_deadlock` unless ``OPT_OUT`` is set or
    the hang is not known here (JAX older than ``HANG_MIN_JAX``, or ``JAX_PLATFORMS``
    without the CPU). If JAX's backend already started (something computed before
    ``gatedrnn`` was imported) the flag can no longer take effect, and a CPU run is warned
    that vmapped gated-cell training may hang."""
    if _set(REUSE_OPT_IN):
        reuse_cpu_memory()
    if _set(SMALL_LOOPS_OPT_IN):
        compile_small_loops_whole()
    if _set(OPT_OUT) or not _hang_possible():
        return
    if not _backends_started():
        avoid_cpu_deadlock()
        return
    import jax

    if (jax.default_backend() == "cpu"
            and CPU_SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", "").split()):
        warnings.warn(
            "gatedrnn was imported after JAX's CPU backend started, so it could not turn off "
            "the XLA scheduler that can hang vmapped LSTM/GRU training with many seeds "
            f"(JAX 0.10): import gatedrnn first, or set XLA_FLAGS={CPU_SCHEDULER_FLAG} "
            f"before JAX starts (or {OPT_OUT}=1 to silence this)", RuntimeWarning,
            stacklevel=3)


__all__ = ["CPU_SCHEDULER_FLAG", "OPT_OUT", "REUSE_OPT_IN", "SMALL_LOOPS_OPT_IN",
           "SMALL_LOOP_OPTION", "apply_on_import", "avoid_cpu_deadlock",
           "compile_small_loops_whole", "reuse_cpu_memory"]
