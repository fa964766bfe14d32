"""What :func:`gatedrnn.workarounds.reuse_cpu_memory` changes: forward+backward and forward
times of ``gr.unroll`` (default arguments) and forward+backward of ``torch.nn.RNN/LSTM/GRU``,
with glibc's default ``malloc`` and with the workaround, plus the page faults of one call and
the memory the process holds at its end.

The setting is process-wide and must come before anything computes, so every measurement
runs in a fresh process (``GATEDRNN_REUSE_CPU_MEMORY=1`` or unset, then ``import gatedrnn``);
the two settings alternate round by round so that a slow period of the machine hits both,
and each figure is the median over rounds of a process's median of ``--repeats`` calls.
PyTorch runs in processes of its own (JAX imported but idle), as in ``benchmarks/run.py``.

Command: ``python benchmarks/memory_reuse.py [--rounds 3] [--repeats 5] [--kinds rnn lstm
gru] [--shape B T I H ...]``: about 7 minutes on a 2-core CPU with the defaults (the suite's
three shapes). Prints a markdown table and writes ``benchmarks/memory_reuse.json``; the
figures and the conclusions are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.shapes import SUITE, add_shape_option  # noqa: E402

SETTINGS = {"glibc default": "0", "reuse_cpu_memory": "1"}


def _resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def gatedrnn_child(cases: list, repeats: int) -> dict:
    """Runs in a fresh process: ``"kind B,T,I,H" -> {"forward+backward": s, "forward": s,
    "faults": minor page faults of one forward+backward call}``, and the resident MiB."""
    import jax
    import jax.numpy as jnp

    import gatedrnn as gr
    from benchmarks.timing import interleaved

    out = {}
    for kind, (B, T, I, H) in cases:
        cell = getattr(gr, kind)(H)
        params = cell.init(jax.random.key(0), I)
        xs = jax.random.normal(jax.random.key(1), (B, T, I))
        forward = jax.jit(lambda p, x, cell=cell: gr.unroll(cell, p, x)[1])
        both = jax.jit(jax.grad(lambda p, x, cell=cell: jnp.sum(gr.unroll(cell, p, x)[1] ** 2)))
        times = interleaved({"forward+backward": lambda: both(params, xs),
                             "forward": lambda: forward(params, xs)}, repeats)
        faults = []
        for _ in range(repeats):
            before = _faults()
            jax.block_until_ready(both(params, xs))
            faults.append(_faults() - before)
        out[f"{kind} {B},{T},{I},{H}"] = {**{k: v["median"] for k, v in times.items()},
                                          "faults": statistics.median(faults)}
    return {"cases": out, "resident_mib": _resident_mib()}


def torch_child(cases: list, repeats: int) -> dict:
    """Runs in a fresh process: ``"kind B,T,I,H" -> {"forward+backward": s, ...}``."""
    import gatedrnn  # noqa: F401  (applies the setting of the environment, as for JAX)
    from benchmarks import torch_peer

    out = {f"{kind} {B},{T},{I},{H}": torch_peer.cell(kind, B, T, I, H, repeats)
           for kind, (B, T, I, H) in cases}
    return {"cases": out, "resident_mib": _resident_mib()}


def _child(which: str, setting: str, cases: list, repeats: int) -> dict:
    env = {**os.environ, "GATEDRNN_REUSE_CPU_MEMORY": setting}  # the script puts ROOT on sys.path
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, "--cases", json.dumps(cases),
         "--repeats", str(repeats)], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"the {which} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(records: list, *keys) -> float:
    values = []
    for record in records:
        for key in keys:
            record = record[key]
        values.append(record)
    return statistics.median(values)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=["rnn", "lstm", "gru"],
                        choices=["rnn", "lstm", "gru"])
    add_shape_option(parser, "a shape to measure (repeatable); the suite's three by default")
    parser.add_argument("--out", default=str(Path(__file__).with_name("memory_reuse.json")))
    parser.add_argument("--child", choices=["gatedrnn", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)  # recorded as the command
    args = parser.parse_args(argv)
    if args.child:
        child = gatedrnn_child if args.child == "gatedrnn" else torch_child
        print(json.dumps(child(json.loads(args.cases), args.repeats)))
        return {}
    from gatedrnn.workarounds import _not_glibc

    other = _not_glibc()
    if other:
        parser.error(f"measures a setting of glibc's malloc, which this system does not use "
                     f"({other})")
    for name in ("rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    shapes = [tuple(s) for s in args.shape] if args.shape else SUITE
    cases = [(kind, shape) for kind in args.kinds for shape in shapes]

    runs = {(which, name): [] for which in ("gatedrnn", "torch") for name in SETTINGS}
    for round_ in range(args.rounds):
        for name, setting in SETTINGS.items():
            for which in ("gatedrnn", "torch"):
                runs[which, name].append(_child(which, setting, cases, args.repeats))
                print(f"round {round_ + 1}/{args.rounds}: {which}, {name}", flush=True)

    off, on = SETTINGS
    rows = []
    for kind, (B, T, I, H) in cases:
        case = f"{kind} {B},{T},{I},{H}"
        row = {"case": case}
        for name in SETTINGS:
            for what in ("forward+backward", "forward", "faults"):
                row[f"gatedrnn {what}, {name}"] = _median(runs["gatedrnn", name], "cases",
                                                          case, what)
            row[f"torch forward+backward, {name}"] = _median(runs["torch", name], "cases",
                                                             case, "forward+backward")
        rows.append(row)
    resident = {f"{which}, {name}": _median(records, "resident_mib")
                for (which, name), records in runs.items()}
    record = {"command": " ".join(["python benchmarks/memory_reuse.py", *argv]),
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "libc": " ".join(platform.libc_ver()), "rounds": args.rounds,
              "repeats": args.repeats, "rows": rows, "resident_mib_at_end": resident}
    Path(args.out).write_text(json.dumps(record, indent=1))

    print("\nms, medians; speed-up = default's time over reuse_cpu_memory's; last column: "
          "PyTorch's time over gatedrnn's (above 1, gatedrnn is faster)\n")
    print("| case | gatedrnn fwd+bwd, default -> reuse | speed-up | forward | page faults a "
          "call | torch fwd+bwd, default -> reuse | speed-up | torch / gatedrnn, default -> "
          "reuse |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        def pair(what, row=row):
            return row[f"{what}, {off}"], row[f"{what}, {on}"]
        g, g_fwd, faults, t = (pair("gatedrnn forward+backward"), pair("gatedrnn forward"),
                               pair("gatedrnn faults"), pair("torch forward+backward"))
        print(f"| {row['case']} | {1e3 * g[0]:.1f} -> {1e3 * g[1]:.1f} | {g[0] / g[1]:.2f}x | "
              f"{1e3 * g_fwd[0]:.1f} -> {1e3 * g_fwd[1]:.1f} ({g_fwd[0] / g_fwd[1]:.2f}x) | "
              f"{faults[0]:.0f} -> {faults[1]:.0f} | {1e3 * t[0]:.1f} -> {1e3 * t[1]:.1f} | "
              f"{t[0] / t[1]:.2f}x | {t[0] / g[0]:.2f}x -> {t[1] / g[1]:.2f}x |")
    print("\nresident MiB at each process's end: "
          + "; ".join(f"{k} {v:.0f}" for k, v in resident.items()))
    return record


if __name__ == "__main__":
    main()
