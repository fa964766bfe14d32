"""Speed and memory of gatedrnn's cells against Flax, Equinox and PyTorch.

Question: how fast are ``gr.rnn``, ``gr.lstm`` and ``gr.gru`` under ``gr.unroll``, forward
and forward+backward (``jax.grad`` of ``sum(ys ** 2)`` with respect to the params), against
the peers a researcher would otherwise use on the same machine: Flax linen ``nn.RNN`` over
``SimpleCell`` / ``LSTMCell`` / ``OptimizedLSTMCell`` / ``GRUCell``, Equinox's ``LSTMCell`` /
``GRUCell`` under ``lax.scan`` (vmapped over the batch, as its docs show), and
``torch.nn.RNN/LSTM/GRU`` (all cores, in a process of its own: ``torch_peer.py``)? And
how close to the machine's float32 matmul peak do they get? The parallel-scan cells
(``gr.min_gru``, ``gr.min_lstm``, ``gr.lru``), which no peer library ships, are measured by
each ``method`` of ``gr.unroll`` (``"sequential"``, the default, and ``"associative"``) at
the same shapes, beside the GRU they simplify. Besides the cells: compile time
against the sequence length, peak memory of a long sequence under each ``remat`` policy, a
2-layer bidirectional LSTM with ``lengths`` against PyTorch's packed sequences, and a
``gr.train`` step against a hand-written optax loop on the same model.

Command: ``python benchmarks/run.py`` (4-8 minutes on a 2-core CPU);
``--quick`` is a one-minute smoke run at toy sizes (what the tests run).
``--shape B T I H`` (repeatable, with ``--out-dir``) measures the cells at shapes of your
choosing instead of the issue's three, against the same peers; a shape with ``B=1`` is
reported per step, as the latency shape is. Every JAX timing is the median of ``--repeats``
repetitions interleaved across the compared functions (a slow period of the machine hits
them all), after one call that compiles and warms up; PyTorch's are medians of as many
repetitions in their own process, right after. Peers that are not
installed are left out and named in the report (``pip install equinox``; PyTorch:
``pip install torch==2.13.0``).

Writes to ``--out-dir`` (default ``benchmarks/``): ``results.json`` (every number, the
machine, versions and command), ``ratios.png`` (each peer's time over gatedrnn's: above 1,
gatedrnn is faster) and the section between the ``run.py`` markers of ``RESULTS.md``.

On a GPU (JAX's default backend) the same command (about 5 minutes on an H100) measures
the same cases there and writes ``results_gpu.json``, ``ratios_gpu.png`` and a section of
its own in ``RESULTS.md``, so the CPU figures stay: PyTorch runs on CUDA (cuDNN),
``jax.experimental.rnn.lstm`` (cuDNN through XLA) joins the LSTM's peers, memory is the
device allocator's peak rather than the resident set, and the matmul peak is measured at
4096^3 (1024^3 is launch-bound there).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gatedrnn as gr

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.shapes import QUICK, SUITE, add_shape_option, label  # noqa: E402
from benchmarks.timing import interleaved, matmul_peak, time_run, unroll_flops  # noqa: E402

BEGIN, END = "<!-- run.py:begin -->", "<!-- run.py:end -->"


def outputs(backend: str) -> tuple[str, str, str, str]:
    """``(results file, ratios figure, begin marker, end marker)`` of a run on ``backend``:
    the CPU's keep the names they always had; another backend's carry its name, so that a
    GPU run adds its figures beside the CPU's instead of replacing them."""
    if backend == "cpu":
        return "results.json", "ratios.png", BEGIN, END
    return (f"results_{backend}.json", f"ratios_{backend}.png",
            f"<!-- run.py:{backend}:begin -->", f"<!-- run.py:{backend}:end -->")

KINDS = ("rnn", "lstm", "gru")
# cells linear in their carry, which gr.unroll also runs as a parallel prefix scan
PARALLEL_KINDS = ("min_gru", "min_lstm", "lru")
METHODS = ("sequential", "associative")


def _installed(name: str) -> bool:
    """Whether ``name`` can be imported (without importing it: PyTorch's threads stay out
    of this process)."""
    return importlib.util.find_spec(name) is not None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _sum_sq(ys) -> jax.Array:
    return jnp.sum(ys ** 2)


def _timed_pair(run, params, xs: jax.Array) -> tuple:
    """``(forward, forward+backward)`` zero-argument callables of ``run(params, xs) -> ys``:
    the jitted outputs, and the jitted gradient of ``sum(ys ** 2)`` in the params."""
    fwd = jax.jit(run)
    grad = jax.jit(jax.grad(lambda p, x: _sum_sq(run(p, x))))
    return (lambda: fwd(params, xs)), (lambda: grad(params, xs))


def gatedrnn_fns(kind: str, xs: jax.Array, key, H: int, **options) -> tuple:
    """``(forward, forward+backward)`` zero-argument callables for ``gr.<kind>(H)`` unrolled
    over ``xs [B, T, I]`` with ``options`` passed to :func:`gatedrnn.unroll`."""
    cell = getattr(gr, kind)(H)
    return _timed_pair(lambda p, x: gr.unroll(cell, p, x, options=gr.ScanOptions(**options))[1],
                       cell.init(key, xs.shape[-1]), xs)


def flax_fns(cell_cls, xs: jax.Array, key, H: int) -> tuple:
    """The same for ``flax.linen.RNN(cell_cls(H))``."""
    import flax.linen as nn

    model = nn.RNN(cell_cls(H))
    return _timed_pair(model.apply, model.init(key, xs), xs)


def equinox_fns(kind: str, xs: jax.Array, key, H: int) -> tuple:
    """The same for an Equinox cell under ``lax.scan``, vmapped over the batch."""
    import equinox as eqx

    cls = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[kind]
    params, static = eqx.partition(cls(xs.shape[-1], H, key=key), eqx.is_array)
    zeros = jnp.zeros((xs.shape[0], H), jnp.result_type(xs, *jax.tree.leaves(params)))
    carry = (zeros, zeros) if kind == "lstm" else zeros

    def run(p, x):
        cell = jax.vmap(eqx.combine(p, static))

        def body(c, x_t):
            c = cell(x_t, c)
            return c, c[0] if kind == "lstm" else c

        return jax.lax.scan(body, carry, jnp.swapaxes(x, 0, 1))[1]

    return _timed_pair(run, params, xs)


def cudnn_lstm_fns(xs: jax.Array, key, H: int) -> tuple:
    """The same for ``jax.experimental.rnn.lstm`` (cuDNN's LSTM called from XLA; GPU only),
    with its own flat weight vector and every sequence at full length."""
    from jax.experimental import rnn

    B, T, I = xs.shape
    zeros = jnp.zeros((1, B, H), xs.dtype)
    lengths = jnp.full((B,), T, jnp.int32)

    def run(weights, x):
        return rnn.lstm(x, zeros, zeros, weights, lengths, input_size=I, hidden_size=H,
                        num_layers=1, dropout=0.0, bidirectional=False)[0]

    return _timed_pair(run, rnn.init_lstm_weight(key, I, H, 1, False), xs)


def torch_device() -> str:
    """Where PyTorch runs: on CUDA when JAX computes on a GPU (the peers share the device)."""
    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def torch_times(what: str, *args) -> dict[str, float]:
    """Median seconds from ``benchmarks/torch_peer.py`` in a process of its own (why: its
    docstring), or ``{}`` without PyTorch."""
    if not _installed("torch"):
        return {}
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("torch_peer.py")),
         "--device", torch_device(), what, *map(str, args)],
        capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def peers(kind: str, xs: jax.Array, key, H: int) -> dict[str, tuple]:
    """Every installed JAX peer's ``(forward, forward+backward)`` for ``kind``."""
    import flax.linen as nn

    out = {}
    for name, cls in {"rnn": [("SimpleCell", nn.SimpleCell)],
                      "lstm": [("LSTMCell", nn.LSTMCell),
                               ("OptimizedLSTMCell", nn.OptimizedLSTMCell)],
                      "gru": [("GRUCell", nn.GRUCell)]}[kind]:
        out[f"flax {name}"] = flax_fns(cls, xs, key, H)
    if kind != "rnn" and _installed("equinox"):
        out[f"equinox {kind.upper()}Cell"] = equinox_fns(kind, xs, key, H)
    if kind == "lstm" and jax.default_backend() == "gpu":
        out["jax.experimental.rnn (cuDNN)"] = cudnn_lstm_fns(xs, key, H)
    return out


def _timed_cases(kinds: tuple, shapes: list, repeats: int, log, candidates,
                 elsewhere=None) -> list[dict]:
    """Forward and forward+backward times of ``gr.<kind>`` for every kind at every shape:
    ``candidates(kind, xs, key, H)`` gives ``name -> (forward, forward+backward)``, timed
    interleaved in this process; ``elsewhere(kind, B, T, I, H, repeats)`` gives ``name ->
    {mode: seconds}`` measured in another (PyTorch). FLOPs are the cell's step's count times
    ``T`` (:func:`unroll_flops`), the same for every candidate."""
    rows = []
    for B, T, I, H in shapes:
        key = jax.random.key(0)
        xs = jax.random.normal(key, (B, T, I), jnp.float32)
        for kind in kinds:
            start = time.perf_counter()
            cell = getattr(gr, kind)(H)
            params = cell.init(key, I)
            fns = candidates(kind, xs, key, H)
            other = elsewhere(kind, B, T, I, H, repeats) if elsewhere else {}
            row = {"label": label(B), "cell": kind, "B": B, "T": T, "I": I, "H": H}
            for mode, index, backward in (("forward", 0, False), ("forward+backward", 1, True)):
                times = {n: t["median"] for n, t in
                         interleaved({n: f[index] for n, f in fns.items()}, repeats).items()}
                times.update({n: t[mode] for n, t in other.items() if mode in t})
                flop = unroll_flops(cell, params, B, T, I, backward=backward)
                row[mode] = {
                    "ms": {n: 1e3 * t for n, t in times.items()},
                    "flops": flop,
                    "gflops": {n: flop / t / 1e9 for n, t in times.items()},
                }
            rows.append(row)
            log(f"{kind} B={B} T={T} I={I} H={H}: fwd+bwd "
                + ", ".join(f"{n} {v:.1f} ms" for n, v in row["forward+backward"]["ms"].items())
                + f" ({time.perf_counter() - start:.0f} s)")
    return rows


def cell_cases(shapes: list, repeats: int, log) -> list[dict]:
    """Forward and forward+backward times of every cell at every shape, with our variants
    (the default arguments, and each choice of ``ScanOptions.hoist``) and the peers: the JAX
    ones interleaved in this process, PyTorch in its own."""
    def candidates(kind, xs, key, H):
        return {"gatedrnn": gatedrnn_fns(kind, xs, key, H),
                "gatedrnn hoisted": gatedrnn_fns(kind, xs, key, H, hoist=True),
                "gatedrnn not hoisted": gatedrnn_fns(kind, xs, key, H, hoist=False),
                **peers(kind, xs, key, H)}

    def pytorch(kind, B, T, I, H, repeats):
        times = torch_times("cell", kind, B, T, I, H, repeats)
        return {f"torch nn.{kind.upper()}": times} if times else {}

    return _timed_cases(KINDS, shapes, repeats, log, candidates, pytorch)


def parallel_cases(shapes: list, repeats: int, log) -> list[dict]:
    """Forward and forward+backward times of the parallel-scan cells at every shape, by each
    ``method`` of :func:`gatedrnn.unroll` (its other arguments left at their defaults),
    interleaved in this process. FLOPs are the sequential step's count times ``T`` for both
    methods: the work the cell asks for, not what the parallel scan adds to it."""
    return _timed_cases(PARALLEL_KINDS, shapes, repeats, log, lambda kind, xs, key, H: {
        m: gatedrnn_fns(kind, xs, key, H, method=m) for m in METHODS})


COMPILE_REPEATS = 3


def compile_times(sizes: dict, log) -> dict:
    """Seconds to lower and compile forward+backward of the LSTM at each sequence length, the
    least of ``COMPILE_REPEATS`` compilations (the machine's noise only adds to it)."""
    out = {}
    B, I, H = sizes["batch"], sizes["input"], sizes["hidden"]
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    for T in sizes["lengths"]:
        xs = jnp.zeros((B, T, I))
        fn = jax.grad(lambda p, x: _sum_sq(gr.unroll(cell, p, x)[1]))
        seconds = []
        for _ in range(COMPILE_REPEATS):
            jax.clear_caches()  # else JAX hands back the executable it compiled the first time
            start = time.perf_counter()
            jax.jit(fn).lower(params, xs).compile()
            seconds.append(time.perf_counter() - start)
        out[str(T)] = min(seconds)
        log(f"compile T={T}: {out[str(T)]:.2f} s")
    return out


_MEMORY_PROGRAM = r"""
import json, resource, sys, threading, time
import numpy as np
which, device, B, T, I, H = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
# on a GPU: (bytes in use now, the most ever held) of the device allocator
device_use = None
if which == "torch":
    import torch
    module = torch.nn.LSTM(I, H, batch_first=True).to(device)
    xt = torch.from_numpy(x).to(device)
    def run():
        (module(xt)[0] ** 2).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        device_use = lambda: (torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
else:
    import jax, jax.numpy as jnp
    import gatedrnn as gr
    cell = gr.lstm(H)
    params = cell.init(jax.random.key(0), I)
    remat = {"default": "auto", "remat=False": False, "remat=True": True}[which]
    grad = jax.grad(lambda p, x: jnp.sum(gr.unroll(cell, p, x,
                                                   options=gr.ScanOptions(remat=remat))[1] ** 2))
    xs = jnp.asarray(x)
    compiled = jax.jit(grad).lower(params, xs).compile()  # compiling is in the baseline
    run = lambda: jax.block_until_ready(compiled(params, xs))
    xla_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
    if device == "cuda":
        def device_use():  # the peak cannot be reset: compiling's scratch may be in it
            stats = jax.devices()[0].memory_stats()
            return stats["bytes_in_use"], stats["peak_bytes_in_use"]
def resident_mib():  # the current resident set (ru_maxrss would hold compiling's peak)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # no /proc (macOS): the growth is not measured, the times still are
        return None

in_use = device_use()[0] if device_use else None
samples, running = [None if device_use else resident_mib()], [True]
def sample():
    while running[0] and samples[0] is not None:
        samples.append(resident_mib())
        time.sleep(0.001)
sampler = threading.Thread(target=sample)
sampler.start()
seconds = []
for _ in range(2):  # the first call also faults its memory in; the second is the fair time
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
running[0] = False
sampler.join()
if device_use:  # what the device held beyond the inputs and weights already there
    peak_mib = (device_use()[1] - in_use) / 2**20
else:
    peak_mib = None if samples[0] is None else max(samples) - samples[0]
print(json.dumps({"peak_mib": peak_mib,
                  "seconds": seconds[1],
                  "first_call_seconds": seconds[0],
                  "xla_temp_mib": None if which == "torch" else xla_mib}))
"""


def memory(sizes: dict, log) -> dict:
    """Growth of the resident memory (MiB, sampled every millisecond from ``/proc``; ``None``
    where there is none, as on macOS; on a GPU, the device allocator's peak instead) over two
    calls of an LSTM forward+backward in a fresh process, above what it was before the first,
    and the second call's wall time, for gatedrnn's
    default (``remat="auto"``: at the full size, the carry saved every ``ceil(sqrt(T))`` steps),
    ``remat=False`` (every step's residuals stored), ``remat=True`` (each step's carry stored)
    and ``torch.nn.LSTM``; for gatedrnn also the temporary buffers XLA planned for the program.
    The growth counts every framework alike (a peak shorter than a millisecond may be missed);
    XLA's plan is exact for JAX."""
    out = {}
    args = [torch_device()] + [str(sizes[k]) for k in ("batch", "length", "input", "hidden")]
    # this process may hold most of a GPU already: a child takes only what it uses
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    for which in ("default", "remat=False", "remat=True") + (
            ("torch",) if _installed("torch") else ()):
        result = subprocess.run([sys.executable, "-c", _MEMORY_PROGRAM, which, *args],
                                capture_output=True, text=True, check=True, env=env,
                                cwd=Path(__file__).parents[1])
        out[which] = json.loads(result.stdout.strip().splitlines()[-1])
        log(f"memory {which}: {_mib(out[which]['peak_mib'])} MiB, "
            f"{out[which]['seconds']:.2f} s")
    return out


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def bidirectional_case(sizes: dict, repeats: int, log) -> dict:
    """A 2-layer bidirectional LSTM over padded sequences with ``lengths``, forward+backward:
    ``gr.stack`` of ``gr.bidirectional`` against ``torch.nn.LSTM(num_layers=2,
    bidirectional=True)`` over ``pack_padded_sequence`` (see ``torch_peer.py``)."""
    B, T, I, H = (sizes[k] for k in ("batch", "length", "input", "hidden"))
    key = jax.random.key(0)
    xs = jax.random.normal(key, (B, T, I))
    lengths = jnp.asarray(np.linspace(T // 2, T, B).astype(np.int32))
    layer = gr.stack([gr.bidirectional(gr.lstm(H), gr.lstm(H)),
                      gr.bidirectional(gr.lstm(H), gr.lstm(H))])
    params = layer.init(key, I)
    grad = jax.jit(jax.grad(
        lambda p, x, n: _sum_sq(gr.unroll(layer, p, x, lengths=n)[1])))
    ms = {"gatedrnn": 1e3 * time_run(grad, params, xs, lengths, repeats=repeats)}
    torch = torch_times("bidirectional", B, T, I, H, repeats)
    if torch:
        ms["torch nn.LSTM"] = 1e3 * torch["forward+backward"]
    out = {"ms": ms, **sizes}
    log(f"bidirectional: {out['ms']}")
    return out


def train_step_case(sizes: dict, repeats: int, log) -> dict:
    """Milliseconds per optimiser step of ``gr.train`` (its ``Trainer.run`` over one chunk
    of ``steps`` steps, with its one evaluation) against a hand-written ``lax.scan`` over
    the same steps: the same model, task batches and Adam, without the non-finite guards."""
    import optax

    steps = sizes["steps"]
    task = gr.tasks.adding(sizes["length"])
    config = gr.train.Config(cell=gr.lstm(sizes["hidden"]), task=task, steps=steps,
                             eval_every=steps, batch_size=sizes["batch"], eval_batch_size=32)
    trainer = gr.train.make_trainer(config)
    state, _ = trainer.init(jax.random.key(0))
    run = jax.jit(trainer.run, static_argnums=1)
    model, tx = trainer.model, gr.train.make_optimizer(config)

    def hand(params):
        def step(carry, key):
            params, opt_state = carry
            xs, targets = task.sample(key, sizes["batch"])[:2]
            grads = jax.grad(lambda p: task.loss(model.apply(p, xs), targets))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(jax.random.key(1), steps)
        return jax.lax.scan(step, (params, tx.init(params)), keys)[0]

    hand = jax.jit(hand)
    times = interleaved({"gr.train": lambda: run(state, 1),
                         "hand-written": lambda: hand(state.params)}, repeats)
    out = {"ms_per_step": {k: 1e3 * v["median"] / steps for k, v in times.items()}, **sizes}
    log(f"train step: {out['ms_per_step']}")
    return out


def machine() -> dict:
    """What the numbers were measured on."""
    versions = {name: _version(name)
                for name in ("jax", "jaxlib", "flax", "optax", "equinox", "torch", "numpy")}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind,
            "versions": versions}


def _ratio_text(ms: dict) -> tuple[str, str, float]:
    """(fastest peer, its ms, peer time over gatedrnn's) from a case's times."""
    peer = min((n for n in ms if not n.startswith("gatedrnn")), key=ms.get)
    return peer, f"{ms[peer]:.1f}", ms[peer] / ms["gatedrnn"]


def report(results: dict) -> str:
    """The markdown section of RESULTS.md for one run."""
    m = results["machine"]
    backend = results.get("backend", "cpu")
    where = "" if backend == "cpu" else f" on the {backend.upper()}, {m['device_kind']}"
    lines = [
        f"## The suite (`benchmarks/run.py`){where}: {m['date']}",
        "",
        f"**{m['cpu']}, {m['cores']} cores** ({', '.join(m['devices'])}), Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + f"; PyTorch with its default threads. Command: `{results['command']}`. "
        f"float32 matmul peak (`jnp.dot` {results.get('peak_size', 1024)}^3, the best of "
        f"{len(results['peak_measurements'])}"
        f" at the start and end): {results['peak_gflops']:.0f} GFLOP/s. "
        f"Medians of {results['repeats']} interleaved repetitions; raw numbers in "
        f"`{outputs(backend)[0]}`. Ratio: the fastest peer's time over gatedrnn's default "
        "(above 1, gatedrnn is faster). Not installed, so not measured: "
        + (", ".join(results["missing"]) or "none") + ".",
        "",
        f"![each peer's time over gatedrnn's]({outputs(backend)[1]})",
        "",
    ]
    for mode in ("forward+backward", "forward"):
        lines += [f"### {mode}, ms (GFLOP/s, share of the matmul peak for gatedrnn)", "",
                  "| cell | B, T, I, H | gatedrnn | hoisted | not hoisted | fastest peer | "
                  "its ms | ratio | every peer, ms |", "|---|---|---|---|---|---|---|---|---|"]
        for row in results["cells"]:
            r = row[mode]
            ms = r["ms"]
            peer, peer_ms, ratio = _ratio_text(ms)
            others = "; ".join(f"{n} {v:.1f}" for n, v in ms.items()
                               if not n.startswith("gatedrnn"))
            per_step = (f" ({1e3 * ms['gatedrnn'] / row['T']:.1f} us/step)"
                        if row["label"] == "latency" else "")
            share = 100 * r["gflops"]["gatedrnn"] / results["peak_gflops"]
            lines.append(
                f"| {row['cell']} | {row['B']}, {row['T']}, {row['I']}, {row['H']} | "
                f"{ms['gatedrnn']:.1f}{per_step} ({r['gflops']['gatedrnn']:.0f}, "
                f"{share:.0f}%) | {ms['gatedrnn hoisted']:.1f} | "
                f"{ms['gatedrnn not hoisted']:.1f} | {peer} | {peer_ms} | {ratio:.2f}x | "
                f"{others} |")
        lines.append("")
    lines += parallel_report(results)
    c = results["compile"]
    lengths = list(c)
    least = (f" (the least of {results['compile_repeats']})" if "compile_repeats" in results
             else "")  # results recorded before it was repeated: one compilation each
    lines += [f"### Compile time, LSTM forward+backward{least}", "",
              " | ".join(f"T={t}: {c[t]:.2f} s" for t in lengths)
              + f" (ratio {c[lengths[-1]] / c[lengths[0]]:.2f}x).", ""]
    mem = results["memory"]
    s = results["memory_sizes"]
    lines += [f"### Peak memory, LSTM forward+backward, B={s['batch']}, T={s['length']}, "
              f"I={s['input']}, H={s['hidden']}", "",
              ("Peak growth of the resident memory over two calls in a fresh process, "
               "sampled every millisecond," if backend == "cpu" else
               "Peak of the device allocator over two calls in a fresh process, above what "
               "it held before the first (for JAX an upper bound: the peak cannot be reset "
               "after compiling, whose scratch may exceed the run's),")
              + " and the temporary buffers XLA planned for the program.", "",
              f"| run | peak {'RSS' if backend == 'cpu' else 'device memory'} growth, MiB | "
              "XLA temporaries, MiB | seconds, second call "
              "(first) |", "|---|---|---|---|"]
    lines += [f"| {k} | {_mib(v['peak_mib'])} | {_mib(v['xla_temp_mib'])}"
              + f" | {v['seconds']:.2f} ({v['first_call_seconds']:.2f}) |"
              for k, v in mem.items()]
    if "memory_note" in results:
        lines += ["", results["memory_note"]]
    bi, tr = results["bidirectional"], results["train_step"]
    lines += ["", f"### 2-layer bidirectional LSTM with lengths, forward+backward, B="
              f"{bi['batch']}, T={bi['length']}, I={bi['input']}, H={bi['hidden']}", "",
              ", ".join(f"{k}: {v:.1f} ms" for k, v in bi["ms"].items()) + ".", "",
              f"### Training step, LSTM H={tr['hidden']} on the adding problem T="
              f"{tr['length']}, batch {tr['batch']}, {tr['steps']} steps", "",
              ", ".join(f"{k}: {v:.2f} ms/step" for k, v in tr["ms_per_step"].items())
              + f" (ratio {tr['ms_per_step']['gr.train'] / tr['ms_per_step']['hand-written']:.2f}"
              "x).", ""]
    return "\n".join(lines)


def parallel_report(results: dict) -> list[str]:
    """The lines of the parallel-scan cells' table (none for results recorded before the
    suite measured them)."""
    if "parallel" not in results:
        return []
    gru = {(r["B"], r["T"], r["I"], r["H"]): r["forward+backward"]["ms"]["gatedrnn"]
           for r in results["cells"] if r["cell"] == "gru"}
    lines = ["### Parallel-scan cells by `method`, ms (GFLOP/s of the sequential scan)", "",
             "No peer library ships these cells: each is timed by both methods of "
             "`gr.unroll`, and beside the GRU (the default, from the first table) at the "
             "same shape. Speed-up: the sequential scan's time over the associative "
             "scan's (above 1, the parallel scan is faster).", "",
             "| cell | B, T, I, H | forward+backward: sequential (default) | associative | "
             "speed-up | forward: sequential | associative | speed-up | gr.gru "
             "forward+backward |", "|---|---|---|---|---|---|---|---|---|"]
    for row in results["parallel"]:
        shape = (row["B"], row["T"], row["I"], row["H"])
        cells = []
        for mode in ("forward+backward", "forward"):
            ms, gflops = row[mode]["ms"], row[mode]["gflops"]
            cells += [f"{ms['sequential']:.1f} ({gflops['sequential']:.0f})",
                      f"{ms['associative']:.1f}",
                      f"{ms['sequential'] / ms['associative']:.2f}x"]
        cells.append(f"{gru[shape]:.1f}" if shape in gru else "-")
        lines.append(f"| {row['cell']} | {', '.join(map(str, shape))} | {' | '.join(cells)} |")
    return lines + [""]


def plot(results: dict, path: Path) -> None:
    """Bar chart: each peer's forward+backward time over gatedrnn's, per cell and shape; below
    it, where the run measured them, the parallel-scan cells' sequential time over their
    associative time, forward and forward+backward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, parallel = results["cells"], results.get("parallel", [])
    names = sorted({n for r in rows for n in r["forward+backward"]["ms"]
                    if not n.startswith("gatedrnn")})
    fig, axes = plt.subplots(2 if parallel else 1, 1, squeeze=False, layout="constrained",
                             figsize=(max(6, 1.2 * max(len(rows), len(parallel))),
                                      8 if parallel else 4))
    ax = axes[0, 0]
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        xs, heights = [], []
        for i, row in enumerate(rows):
            ms = row["forward+backward"]["ms"]
            if name in ms:
                xs.append(i + j * width)
                heights.append(ms[name] / ms["gatedrnn"])
        ax.bar(xs, heights, width, label=name)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", lw=1)
    # issue 11's targets: 1.25x every peer on the CPU, 0.8x cuDNN's LSTM on a GPU
    target, what = ((1.25, "target 1.25x") if results.get("backend", "cpu") == "cpu"
                    else (0.8, "target 0.8x (LSTM against cuDNN)"))
    ax.axhline(target, color="black", lw=1, ls="--", label=what)
    _shape_ticks(ax, rows, width)
    ax.set_ylabel("peer time / gatedrnn time (forward+backward)")
    ax.legend(fontsize=7, ncols=2)
    if parallel:
        ax = axes[1, 0]
        for j, mode in enumerate(("forward", "forward+backward")):
            ax.bar([i + j * 0.4 for i in range(len(parallel))],
                   [r[mode]["ms"]["sequential"] / r[mode]["ms"]["associative"]
                    for r in parallel], 0.4, label=mode)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", lw=1)
        _shape_ticks(ax, parallel, 0.4)
        ax.set_ylabel("sequential time / associative time")
        ax.set_title("parallel-scan cells: above 1, method='associative' is faster",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _shape_ticks(ax, rows: list, width: float) -> None:
    """One tick per row, under its group of bars: the cell and its shape; ratios on the log
    axis written as plain numbers."""
    from matplotlib.ticker import FormatStrFormatter

    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%g"))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))],
                  [f"{r['cell']}\n{r['B']},{r['T']},{r['I']},{r['H']}" for r in rows],
                  fontsize=8)


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Puts ``section`` between the markers ``begin`` and ``end`` of ``path``, leaving the rest
    of it as it was (appended, with the markers, when they are not there)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def check_out_dir(out: Path, backend: str = "cpu") -> None:
    """Refuses (SystemExit, before anything is measured) an ``--out-dir`` that is a file, or
    that holds the results file or ratios figure of ``outputs(backend)`` not written by this
    script: those two are replaced whole, so only this script's own are. ``RESULTS.md`` is
    safe anyway: only the section between the markers is rewritten."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out-dir {out} is a file, not a folder")
    names = outputs(backend)[:2]
    try:
        ours = json.loads((out / names[0]).read_text())["command"].startswith(
            "python benchmarks/run.py")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ours = False
    present = [n for n in names if (out / n).exists()]
    if present and not ours:
        raise SystemExit(f"--out-dir {out} holds {present}, not written by benchmarks/run.py "
                         "(its results file records the command); they would be overwritten. "
                         "Choose another --out-dir")


def command(quick: bool, shapes: list | None) -> str:
    """The command line of a run, as results.json and RESULTS.md record it."""
    return ("python benchmarks/run.py" + " --quick" * quick
            + "".join(f" --shape {B} {T} {I} {H}" for B, T, I, H in shapes or []))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, for the tests")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per function (default 5, 2 with --quick)")
    add_shape_option(parser, "a shape of the cell tables (repeatable) instead of the "
                             "issue's three; needs --out-dir")
    parser.add_argument("--out-dir", default=None,
                        help="where the results go (default benchmarks/; required with "
                             "--shape, so the recorded figures stay)")
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats if args.repeats is not None else (2 if quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1; got {repeats}")
    if args.shape and args.out_dir is None:
        parser.error("--shape needs --out-dir: benchmarks/ holds the figures of the issue's "
                     "shapes, which these would replace")
    shapes = args.shape or (QUICK if quick else SUITE)
    out_dir = Path(args.out_dir or Path(__file__).parent)
    backend = jax.default_backend()
    check_out_dir(out_dir, backend)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_name, figure_name, begin, end = outputs(backend)

    def log(line: str) -> None:
        print(line, flush=True)

    # the best of several: one measurement can catch the machine busy (124 against 244
    # GFLOP/s minutes apart, here); measured again at the end for the same reason
    peak_size = 256 if quick else 1024 if backend == "cpu" else 4096
    peaks = [matmul_peak(peak_size) / 1e9 for _ in range(3)]
    log(f"matmul peak: {max(peaks):.0f} GFLOP/s")
    missing = [n for n in ("equinox", "torch") if not _installed(n)]
    results = {
        "machine": machine(), "command": command(quick, args.shape),
        "repeats": repeats, "missing": missing, "backend": backend, "peak_size": peak_size,
        "cells": cell_cases(shapes, repeats, log),
        "parallel": parallel_cases(shapes, repeats, log),
        "compile": compile_times({"batch": 4 if quick else 64, "input": 8 if quick else 64,
                                  "hidden": 16 if quick else 256,
                                  "lengths": [16, 256] if quick else [256, 4096]}, log),
    }
    results["compile_repeats"] = COMPILE_REPEATS
    results["memory_sizes"] = ({"batch": 4, "length": 64, "input": 8, "hidden": 16} if quick
                               else {"batch": 64, "length": 4096, "input": 64, "hidden": 256})
    results["memory"] = memory(results["memory_sizes"], log)
    results["bidirectional"] = bidirectional_case(
        {"batch": 4, "length": 16, "input": 8, "hidden": 16} if quick
        else {"batch": 32, "length": 200, "input": 64, "hidden": 128}, repeats, log)
    results["train_step"] = train_step_case(
        {"batch": 8, "length": 20, "hidden": 16, "steps": 10} if quick
        else {"batch": 64, "length": 100, "hidden": 128, "steps": 100}, repeats, log)
    peaks += [matmul_peak(peak_size) / 1e9 for _ in range(3)]
    results["peak_gflops"], results["peak_measurements"] = max(peaks), peaks
    (out_dir / results_name).write_text(json.dumps(results, indent=1))
    plot(results, out_dir / figure_name)
    write_section(out_dir / "RESULTS.md", report(results), begin, end)
    log(f"wrote {out_dir / results_name}, {out_dir / figure_name} and "
        f"{out_dir / 'RESULTS.md'}")
    return results


if __name__ == "__main__":
    main()
