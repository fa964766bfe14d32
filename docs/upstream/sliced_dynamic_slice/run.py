"""XLA:CPU: a loop fusion that slices a value computed from a dynamic slice runs up to 7x
slower under the fusion emitters than the same values with the slices taken of its inputs.

Standalone (JAX only): ``python docs/upstream/sliced_dynamic_slice/run.py``. The pattern is a
GRU's gates for an input of one feature: ``u = x[t] * w + b`` (``x [T, B, 1]``, ``w [1, 3H]``),
``u`` split in three, each part added to a slice of ``y [B, 3H]`` and put through a sigmoid or
tanh. XLA compiles either function to a single loop fusion (the script prints each program's
instructions). ``sliced`` slices ``u``, a value computed inside the fusion from the dynamic
slice ``x[t]``; ``sliced inputs`` slices ``w`` and ``b`` and computes each part from ``x[t]``
(the same values). Seen on a 2-core AMD EPYC with jax/jaxlib 0.10.2, us a call:

- B=64, H=128: 211.5 against 82.0 (2.6x);
- B=1024, H=128: 2078.7 against 295.3 (7.0x);
- B=4096, H=256: 8792.8 against 1192.2 (7.4x).

With ``XLA_FLAGS=--xla_cpu_use_fusion_emitters=false`` (the older emitter) ``sliced`` took
93.1, 338.7 and 1305.1 us against 108.8, 330.7 and 2436.5: the slow case is the fusion
emitters'. With ``x`` a plain ``[B, 1]`` input (no dynamic slice) the two took about the same
time (0.75-1.20x).

Where it arises: in a ``lax.scan`` over a sequence whose inputs have one feature, XLA rewrites
the input product ``x_t @ w_x`` (contracting one feature) as a broadcast multiply and fuses it
with the dynamic slice of ``x_t`` into the gates' fusion. gatedrnn's LSTM, GRU, minGRU and
minLSTM keep that product a dot on the CPU instead (``gatedrnn.cells._gated_affine``); their
forward pass at B=1, T=1000, I=1, H=128 became 1.15-4.4x faster (docs/cells.md).
"""

import re
import statistics
import time

import jax
import jax.numpy as jnp


def sliced(x, w, b, y, t):
    u = jax.lax.dynamic_index_in_dim(x, t, keepdims=False) * w + b
    u_r, u_z, u_n = jnp.split(u, 3, axis=-1)
    y_r, y_z, y_n = jnp.split(y, 3, axis=-1)
    r, z = jax.nn.sigmoid(u_r + y_r), jax.nn.sigmoid(u_z + y_z)
    return (1 - z) * jnp.tanh(u_n + r * y_n)


def sliced_inputs(x, w, b, y, t):
    (w_r, w_z, w_n), (b_r, b_z, b_n) = jnp.split(w, 3, axis=-1), jnp.split(b, 3, axis=-1)
    y_r, y_z, y_n = jnp.split(y, 3, axis=-1)
    x_t = jax.lax.dynamic_index_in_dim(x, t, keepdims=False)
    r, z = jax.nn.sigmoid(x_t * w_r + b_r + y_r), jax.nn.sigmoid(x_t * w_z + b_z + y_z)
    return (1 - z) * jnp.tanh(x_t * w_n + b_n + r * y_n)


def median_time(f, *args, repeats=21) -> float:
    f(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    print("jax", jax.__version__, jax.devices()[0].device_kind)
    for batch, hidden in ((64, 128), (1024, 128), (4096, 256)):
        k = jax.random.split(jax.random.key(0), 4)
        x = jax.random.normal(k[0], (5, batch, 1))
        w = jax.random.normal(k[1], (1, 3 * hidden))
        b = jax.random.normal(k[2], (3 * hidden,))
        y = jax.random.normal(k[3], (batch, 3 * hidden))
        t = jnp.int32(3)
        times = []
        for f in (sliced, sliced_inputs):
            compiled = jax.jit(f).lower(x, w, b, y, t).compile()
            if batch == 64:
                entry = re.search(r"ENTRY .*?\n}", compiled.as_text(), re.S).group(0)
                print(f.__name__, [line.strip()[:60] for line in entry.split("\n")
                                   if " = " in line and "parameter(" not in line])
            times.append(median_time(compiled, x, w, b, y, t))
        assert jnp.allclose(sliced(x, w, b, y, t), sliced_inputs(x, w, b, y, t), atol=1e-5)
        print(f"B={batch} H={hidden}: sliced {times[0] * 1e6:.1f} us, sliced inputs "
              f"{times[1] * 1e6:.1f} us ({times[0] / times[1]:.2f}x)")


if __name__ == "__main__":
    main()
