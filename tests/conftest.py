"""Test configuration shared by every test module.

Float64 is enabled so NumPy references in float64 can be compared tightly; tests that check
float32 behaviour ask for float32 explicitly. Matmul precision is pinned to "highest" because
GPUs default to TF32 for float32 matmuls.
"""

import jax

import gatedrnn  # noqa: F401  (importing it first avoids JAX 0.10's CPU deadlock)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
