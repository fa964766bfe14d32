"""Workarounds for XLA runtime bugs.

One is applied when ``gatedrnn`` is imported (``apply_on_import``, below), because the bug it
avoids is a hang that a user who never read the docs must not meet; set the environment
variable ``GATEDRNN_KEEP_CPU_SCHEDULER=1`` to keep XLA's default. Scripts may also call
``avoid_cpu_deadlock()`` themselves before their first computation.
"""

from __future__ import annotations

import os
import warnings

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
OPT_OUT = "GATEDRNN_KEEP_CPU_SCHEDULER"


def avoid_cpu_deadlock() -> None:
    """Turns off XLA's concurrency-optimised CPU scheduler by appending
    ``CPU_SCHEDULER_FLAG`` to ``XLA_FLAGS`` (kept once, other flags untouched).

    JAX 0.10.2's CPU runtime can hang forever executing a vmapped LSTM or GRU training
    program with 6-8 seeds (on its second call, sometimes its first): every XLA thread idles
    while one waits in ``tsl::BlockUntilReady``. Without this scheduler it runs. XLA reads
    ``XLA_FLAGS`` when the backend starts, at the first computation, so call this before
    anything computes (after ``import jax`` is fine). GPU and TPU backends ignore the flag.
    Measured cost on a 2-core CPU: 5-10% per step for one or two seeds, none at four
    (benchmarks/RESULTS.md).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG not in flags.split():
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()


def _backends_started() -> bool:
    try:  # no public API says whether XLA's backends have started
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def apply_on_import() -> None:
    """What ``import gatedrnn`` does: :func:`avoid_cpu_deadlock` unless ``OPT_OUT`` is set
    (to anything but ``""`` or ``"0"``). If JAX's backend already started (something computed
    before ``gatedrnn`` was imported) the flag can no longer take effect, and a CPU run is
    warned that vmapped gated-cell training may hang."""
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
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


__all__ = ["CPU_SCHEDULER_FLAG", "OPT_OUT", "apply_on_import", "avoid_cpu_deadlock"]
