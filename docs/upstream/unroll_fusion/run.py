"""XLA:CPU: unrolling a scan by 2 makes the gradient of a batch-1 tanh RNN 3-5x slower.

Standalone (JAX only): ``python docs/upstream/unroll_fusion/run.py``. The gradient of
``sum(h_t^2)`` through ``h_t = tanh(x_t w_x + h_{t-1} w_h)`` over T=1000 steps, batch 1,
H=128, with ``lax.scan(..., unroll=k)``. Seen on a 2-core x86 CPU with jax/jaxlib 0.10.2:
``unroll=1`` 4.7 ms, ``unroll=2`` 16.4 ms, ``unroll=4`` 12.8 ms; at batch 8 unrolling is
faster (11.5 against 10.3 ms), and so it is for LSTM and GRU cells at batch 1 (17.7
against 11.6 ms).

What the optimised HLO shows (the script prints the size of that fusion): with batch 1 the
weight gradient ``h_{t-1}^T g_t`` contracts a dimension of size 1 and is rewritten into an
outer product, a broadcast multiply fused with the accumulation ``dW += ...`` and with the
elementwise chain that makes ``g_t`` from the saved activations (add, multiply, multiply,
add on ``[1, H]`` vectors). With ``unroll=1`` that fusion has 29 instructions and the whole
gradient takes 4-5 us a step. With ``unroll=2`` it holds the same for both steps of the body
(59 instructions), each step's residuals read through a ``[1, 2, 1, H]`` dynamic slice and a
static slice, and the gradient takes about 17 us a step: the same work, 3-5x the time (4.7
against 16.4 ms in one run, 3.6 against 17.0 in another). A likely cause is that the ``[1,
H]`` chain, a broadcast operand of the ``[H, H]`` output, is no longer computed once but per
output element (H times the work); the generated code was not read to confirm it.
"""

import re
import statistics
import time

import jax
import jax.numpy as jnp

B, T, I, H = 1, 1000, 1, 128


def loss(params, xs, unroll):
    w_x, w_h = params

    def step(h, x_t):
        h = jnp.tanh(x_t @ w_x + h @ w_h)
        return h, h

    _, hs = jax.lax.scan(step, jnp.zeros((B, H)), xs, unroll=unroll)
    return jnp.sum(hs ** 2)


def outer_product_fusion_size(text: str) -> int:
    """Instructions in the largest fused computation whose root is an ``[H, H]`` add."""
    root = re.compile(rf"ROOT \S+ = f32\[{H},{H}\]\S* add\(")
    sizes = [len(block.splitlines()) - 2 for block in text.split("\n\n")
             if block.startswith("%fused_computation") and root.search(block)]
    return max(sizes, default=0)


def main():
    keys = jax.random.split(jax.random.key(0), 3)
    params = (jax.random.normal(keys[0], (I, H)) * 0.5,
              jax.random.normal(keys[1], (H, H)) / H ** 0.5)
    xs = jax.random.normal(keys[2], (T, B, I))
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, B={B} T={T} H={H}")
    for unroll in (1, 2, 4):
        grad = jax.jit(jax.grad(loss), static_argnums=2)
        compiled = grad.lower(params, xs, unroll).compile()
        jax.block_until_ready(compiled(params, xs))
        times = []
        for _ in range(9):
            start = time.perf_counter()
            jax.block_until_ready(compiled(params, xs))
            times.append(time.perf_counter() - start)
        print(f"unroll={unroll}: {1e3 * statistics.median(times):6.2f} ms, "
              f"{outer_product_fusion_size(compiled.as_text())} instructions in the "
              f"[{H}, {H}] weight-gradient fusion")


if __name__ == "__main__":
    main()
