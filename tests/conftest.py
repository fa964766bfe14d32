"""Test configuration shared by every test module.

Float64 is enabled so NumPy references in float64 can be compared tightly; tests that check
float32 behaviour ask for float32 explicitly. Matmul precision is pinned to "highest" because
GPUs default to TF32 for float32 matmuls.
"""

import os

import jax

# XLA's CPU runtime in jax 0.10 can deadlock executing vmapped LSTM/GRU training (8 seeds hang
# on their second call) under its concurrency-optimised scheduler (docs/training.md). XLA reads
# the flags when the backend starts, at the first computation, so setting them here works.
CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if CPU_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_FLAG}".strip()

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
