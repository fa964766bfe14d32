"""What the LSTM's descendants cost, as ratios measured in one run (forward+backward of
``gr.unroll``, the gradient of ``sum(ys**2)`` in the params, jit-compiled, float32):

1. ``gr.slstm`` against ``gr.lstm`` at the same hidden size, one head (the sLSTM's extra
   normaliser and stabiliser states; both steps have hand-written derivatives);
2. ``gr.mlstm``'s parallel form (``method="parallel"``, ``O(T^2 d)`` work, no loop) against
   its recurrent one (``O(T d^2)``, ``T`` sequential steps) as ``T`` grows;
3. ``gr.rg_lru`` under ``method="associative"`` against ``"sequential"`` at long ``T``.

    python benchmarks/descendants.py [--repeats 7] [--out benchmarks/descendants.json]

Medians of interleaved repetitions after a warm-up (``benchmarks/timing.py``); each row's
ratio is ``other / reference`` from the same run, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gatedrnn as gr  # noqa: E402
from benchmarks import timing  # noqa: E402

INPUT = 32


def _grad_fn(cell, options=None):
    def loss(params, xs):
        return jnp.sum(gr.unroll(cell, params, xs, options=options)[1] ** 2)
    return jax.jit(jax.grad(loss))


def _pair(reference, other, batch, steps, repeats, ref_options=None, other_options=None):
    """Seconds of each and the ratio ``other / reference``."""
    xs = jax.random.normal(jax.random.key(1), (batch, steps, INPUT))
    p_ref = reference.init(jax.random.key(0), INPUT)
    p_other = other.init(jax.random.key(0), INPUT)
    f_ref, f_other = _grad_fn(reference, ref_options), _grad_fn(other, other_options)
    times = timing.interleaved({"reference": lambda: f_ref(p_ref, xs),
                                "other": lambda: f_other(p_other, xs)}, repeats)
    ref_s, other_s = times["reference"]["median"], times["other"]["median"]
    return {"batch": batch, "steps": steps, "reference_s": ref_s, "other_s": other_s,
            "ratio": other_s / ref_s}


def measure(sizes: dict, repeats: int) -> dict:
    rows = {"slstm_vs_lstm": [], "mlstm_parallel_vs_recurrent": [],
            "rg_lru_associative_vs_sequential": []}
    for hidden in sizes["hidden"]:
        rows["slstm_vs_lstm"].append({"hidden": hidden, **_pair(
            gr.lstm(hidden), gr.slstm(hidden), sizes["batch"], sizes["steps"], repeats)})
    mlstm = gr.mlstm(sizes["mlstm_hidden"], heads=sizes["mlstm_heads"])
    for steps in sizes["mlstm_steps"]:
        rows["mlstm_parallel_vs_recurrent"].append({
            "hidden": sizes["mlstm_hidden"], "heads": sizes["mlstm_heads"], **_pair(
                mlstm, mlstm, sizes["mlstm_batch"], steps, repeats,
                other_options=gr.ScanOptions(method="parallel"))})
    lru = gr.rg_lru(sizes["lru_hidden"])
    for steps in sizes["lru_steps"]:
        rows["rg_lru_associative_vs_sequential"].append({"hidden": sizes["lru_hidden"], **_pair(
            lru, lru, sizes["lru_batch"], steps, repeats,
            other_options=gr.ScanOptions(method="associative"))})
    return {"rows": rows, "sizes": sizes, "repeats": repeats, "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": str(jax.devices()),
            "machine": f"{platform.machine()}, {platform.processor() or 'unknown cpu'}"}


DEFAULT = {"hidden": [128, 256], "batch": 16, "steps": 100,
           "mlstm_hidden": 64, "mlstm_heads": 4, "mlstm_batch": 8,
           "mlstm_steps": [64, 128, 256, 512, 1024],
           "lru_hidden": 128, "lru_batch": 8, "lru_steps": [1024, 4096]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    sizes = DEFAULT if not args.quick else {
        "hidden": [8], "batch": 2, "steps": 5, "mlstm_hidden": 8, "mlstm_heads": 2,
        "mlstm_batch": 2, "mlstm_steps": [4], "lru_hidden": 8, "lru_batch": 2,
        "lru_steps": [8]}
    result = measure(sizes, args.repeats)
    labels = {"slstm_vs_lstm": "sLSTM / LSTM", "mlstm_parallel_vs_recurrent":
              "mLSTM parallel / recurrent", "rg_lru_associative_vs_sequential":
              "RG-LRU associative / sequential"}
    for name, rows in result["rows"].items():
        for r in rows:
            print(f"{labels[name]:34s} B={r['batch']:<3d} T={r['steps']:<5d} H={r['hidden']:<4d} "
                  f"{1e3 * r['reference_s']:8.2f} ms -> {1e3 * r['other_s']:8.2f} ms: "
                  f"{r['ratio']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
