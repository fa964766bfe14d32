"""XLA:CPU, float64: ``jax.vmap`` of ``jax.grad`` through a ``lax.scan`` LSTM is wrong.

Standalone (JAX only): ``python docs/upstream/vmap_grad_float64/run.py``. Seen on a 2-core
x86 CPU with jax/jaxlib 0.10.2 (found 2026-11-22). The gradient of ``sum(h_t^2)`` through
8 steps of an LSTM (batch 4, H=5) in the params, for a stack of 2 params vmapped, differs
from ``jax.grad`` at each member alone: by 0.08 with these params, 0.4-1.4 with others
(entries of order 1); a finite difference agrees with ``jax.grad``, so the vmapped one is
wrong. The script prints the largest difference for each variant:

- ``vmap(grad)``, float64, default flags: wrong (0.08);
- the same under ``jax.disable_jit()``, or with ``lax.map`` instead of ``vmap``: right;
- with ``XLA_FLAGS=--xla_backend_optimization_level=0``: right;
- with ``XLA_FLAGS=--xla_llvm_disable_expensive_passes=true``: wrong (0.08);
- in float32: right (1e-7);
- with ``sigmoid(v)`` written as ``0.5 * tanh(0.5 * v) + 0.5``: right; written as
  ``1 / (1 + exp(-v))``: wrong.

So it takes float64, XLA's CPU optimisations and an ``exp`` in the batched loop body;
``exp`` alone, compiled on arrays of these shapes, is right to 2e-16.

It depends on the CPU: on a 2-core AMD EPYC with the same jax/jaxlib 0.10.2 every variant
above is right to 2e-16 (2026-12-07), so the test that runs this script is a non-strict xfail.

XLA:GPU is right: on an H100 with jax 0.11.2 (CUDA 13) every float64 variant above differs
by at most 2e-16 (2026-11-23). Its float32 variant differs by 1e-3 there, as expected:
XLA's float32 dots on that GPU default to TF32, which rounds a batched product and a single
one differently.
"""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def loss(params, xs, sigmoid=jax.nn.sigmoid):
    def step(carry, x):
        h, c = carry
        pre = x @ params["w_x"] + params["b"] + h @ params["w_h"]
        i, f, g, o = jnp.split(pre, 4, -1)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((xs.shape[1], params["w_h"].shape[0]), xs.dtype)
    return jnp.sum(jax.lax.scan(step, (zeros, zeros), xs)[1] ** 2)


def largest_difference(dtype=jnp.float64, sigmoid=jax.nn.sigmoid, vmapped=True) -> float:
    """Largest |vmap(grad)[0] - grad(member 0)| (or lax.map's, when not ``vmapped``)."""
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w_x": jax.random.normal(k[0], (3, 20), dtype) * 0.5,
              "w_h": jax.random.normal(k[1], (5, 20), dtype) * 0.5,
              "b": jax.random.normal(k[2], (20,), dtype) * 0.5}
    xs = jax.random.normal(k[3], (8, 4, 3), dtype)
    stacked = jax.tree.map(lambda v: jnp.stack([v, 2 * v]), params)
    grad = jax.grad(lambda p: loss(p, xs, sigmoid))
    many = jax.vmap(grad)(stacked) if vmapped else jax.lax.map(grad, stacked)
    return max(float(jnp.max(jnp.abs(a[0] - b)))
               for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(grad(params))))


if __name__ == "__main__":
    print("jax", jax.__version__, jax.devices())
    print("vmap(grad), float64:", largest_difference())
    with jax.disable_jit():
        print("vmap(grad), float64, jit disabled:", largest_difference())
    print("lax.map(grad), float64:", largest_difference(vmapped=False))
    print("vmap(grad), float32:", largest_difference(jnp.float32))
    print("vmap(grad), float64, sigmoid via tanh:",
          largest_difference(sigmoid=lambda v: 0.5 * jnp.tanh(0.5 * v) + 0.5))
    print("vmap(grad), float64, sigmoid via exp:",
          largest_difference(sigmoid=lambda v: 1 / (1 + jnp.exp(-v))))
