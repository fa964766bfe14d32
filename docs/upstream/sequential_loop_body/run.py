"""XLA:CPU: a loop whose body has 8 thunks or fewer runs its matmuls up to 1.75x slower
than the same body given two more (trivial) thunks.

Standalone (JAX only): ``python docs/upstream/sequential_loop_body/run.py``. A GRU-like
recurrence ``h_t = f(x_t @ w_x + b, h_{t-1} @ w_h)`` (``w_h [H, 3H]``, gates sliced from
the two products) under ``lax.scan``, forward only, against the same scan that also stacks
``k`` trivial per-step outputs (``x_t[:, :1] * c``), which add ``k`` dynamic-update-slice
thunks to the loop body and nothing to its matmuls. Seen on a 2-core AMD EPYC with
jax/jaxlib 0.10.2, us a step for ``k`` = 0, 1, 2, 3:

- B=64, T=256, I=64, H=256: 169.9, 170.8, 97.4, 96.9;
- B=16, T=500, I=32, H=256: 47.4, 48.2, 29.4, 28.9 (another run 48.5, 46.4, 29.0, 28.5);
- B=4, T=1000, I=8, H=256: 13.4, 9.1, 9.0, 8.8 (other runs 14.4, 14.8, 8.7, 8.6 and
  13.1, 9.0, 8.3, 8.4);
- B=1, T=1000, I=1, H=128: 3.2, 3.2, 3.2, 3.7;
- B=256, T=100, I=128, H=512 (not in ``SHAPES``): 1335, 1366, 1300, 1311.

The likely cause: XLA's CPU ``ThunkExecutor`` runs a thunk sequence of at most
``execute_sequential_num_thunks_threshold = 8`` thunks sequentially, in the calling thread
(``xla/backends/cpu/runtime/thunk_executor.h``). The script counts the thunks of the loop
body in the optimised HLO (instructions other than views, constants and tuples): 7 with
``k=0``, 8 with ``k=1``, 9 with ``k=2``. The step time drops at ``k=2`` at B=16 and 64, and
at B=4 at ``k=1`` in two runs of three (``k=2`` in the other), so this count may differ by
one from the runtime's. In a profile (``jax.profiler``, B=16) the recurrent
product ``[16, 256] @ [256, 768]`` (a YNNPACK fusion) took 41 us a step with ``k=0`` and 25
with ``k=2``, and the ``k=0`` program logged four times as many ``SlinkyThreadPool::Await``
events (379 a call against 90): the caller waiting on the pool's workers. At batch 1
the products run on one thread (Eigen) and the mode makes no difference.

It needs XLA's default CPU scheduler: with
``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` every ``k`` ran at the
slower rate (297-303 us a step at B=64, 69-75 at B=16; 2026-11-24, the same machine).
"""

import re
import statistics
import time

import jax
import jax.numpy as jnp

SHAPES = ((64, 256, 64, 256), (16, 500, 32, 256), (4, 1000, 8, 256),  # B, T, I, H
          (1, 1000, 1, 128))
SKIPPED = ("get-tuple-element", "constant", "parameter", "tuple", "bitcast")


def scan_with(extra: int, h0, w_h, w_x, b, xs):
    """The recurrence over ``xs [T, B, I]``, stacking ``extra`` trivial outputs besides h."""
    def step(h, x_t):
        u_r, u_z, u_n = jnp.split(x_t @ w_x + b, 3, axis=-1)
        w_r, w_z, w_n = jnp.split(h @ w_h, 3, axis=-1)
        r, z = jax.nn.sigmoid(u_r + w_r), jax.nn.sigmoid(u_z + w_z)
        h = (1 - z) * jnp.tanh(u_n + r * w_n) + z * h
        return h, [h] + [x_t[:, :1] * (i + 2.0) for i in range(extra)]

    return jax.lax.scan(step, h0, xs)[1]


def body_thunks(text: str) -> int:
    """Instructions of the (one) while body in ``text`` that run as thunks: all but views,
    constants, parameters and tuples."""
    body = re.search(r"body=%([\w.\-]+)", text).group(1)
    block = text[text.index(f"\n%{body} ") + 1:]
    block = block[:block.index("\n}")]
    skipped = re.compile(rf"\b({'|'.join(SKIPPED)})\(")
    return sum(1 for line in block.splitlines()[1:]
               if not skipped.search(line) and "ROOT" not in line)


def main():
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
    for batch, steps, inputs, hidden in SHAPES:
        keys = jax.random.split(jax.random.key(0), 3)
        w_h = jax.random.normal(keys[0], (hidden, 3 * hidden)) / hidden ** 0.5
        w_x = jax.random.normal(keys[1], (inputs, 3 * hidden)) / inputs ** 0.5
        b = jnp.zeros(3 * hidden)
        xs = jax.random.normal(keys[2], (steps, batch, inputs))
        args = (jnp.zeros((batch, hidden)), w_h, w_x, b, xs)
        compiled = {k: jax.jit(scan_with, static_argnums=0).lower(k, *args).compile()
                    for k in range(4)}
        reference = compiled[0](*args)[0]
        times = {k: [] for k in compiled}
        for fn in compiled.values():
            jax.block_until_ready(fn(*args))
        for _ in range(11):  # interleaved, so a slow spell of the machine hits all alike
            for k, fn in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times[k].append(time.perf_counter() - start)
        assert all(bool(jnp.array_equal(fn(*args)[0], reference)) for fn in compiled.values())
        print(f"B={batch} T={steps} I={inputs} H={hidden}: " + ", ".join(
            f"k={k}: {1e6 * statistics.median(t) / steps:.1f} us/step "
            f"({body_thunks(compiled[k].as_text())} thunks)" for k, t in times.items()))


if __name__ == "__main__":
    main()
