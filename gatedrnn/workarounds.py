"""Opt-in workarounds for XLA runtime bugs, for scripts to call before their first computation.

The library never sets them itself (it reads and writes no globals); a script, a notebook or
a test configuration asks for them explicitly.
"""

from __future__ import annotations

import os

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def avoid_cpu_deadlock() -> None:
    """Turns off XLA's concurrency-optimised CPU scheduler by appending
    ``CPU_SCHEDULER_FLAG`` to ``XLA_FLAGS`` (kept once, other flags untouched).

    JAX 0.10.2's CPU runtime can hang forever executing a vmapped LSTM or GRU training
    program with 6-8 seeds (on its second call, sometimes its first): every XLA thread idles
    while one waits in ``tsl::BlockUntilReady``. Without this scheduler it runs. XLA reads
    ``XLA_FLAGS`` when the backend starts, at the first computation, so call this before
    anything computes (after ``import jax`` is fine). GPU and TPU backends ignore the flag.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG not in flags.split():
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}".strip()


__all__ = ["CPU_SCHEDULER_FLAG", "avoid_cpu_deadlock"]
