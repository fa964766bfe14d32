"""How long ``import gatedrnn`` takes beyond ``import jax``, in fresh processes.

    python benchmarks/import_time.py [--repeats 7]

Each repeat starts a new Python process that times ``import jax`` and then ``import
gatedrnn`` (what a user pays before their first line runs), and then, one by one, the
submodules ``gatedrnn`` imports only when first used (``gr.train``, ``gr.sweep``, ``gr.plots``,
``gr.modules``, ...). Medians over the repeats, in seconds; the processes alternate with
nothing else between, so a busy machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys

_PROBE = """
import json, time
t0 = time.perf_counter(); import jax
t1 = time.perf_counter(); import gatedrnn as gr
t2 = time.perf_counter()
lazy = {}
for name in getattr(gr, "_LAZY_MODULES", ()):  # a version before lazy imports has none
    start = time.perf_counter(); getattr(gr, name); lazy[name] = time.perf_counter() - start
print(json.dumps({"jax": t1 - t0, "gatedrnn": t2 - t1, "lazy": lazy, "version": jax.__version__,
                  "path": gr.__file__}))
"""


def measure(repeats: int) -> dict:
    """Median seconds of ``import jax``, of ``import gatedrnn`` after it, and of each lazily
    imported submodule after that, over ``repeats`` fresh processes."""
    runs = [json.loads(subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                                      text=True, check=True).stdout) for _ in range(repeats)]
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {"jax": median("jax"), "gatedrnn": median("gatedrnn"),
            "lazy": {name: statistics.median(r["lazy"][name] for r in runs)
                     for name in runs[0]["lazy"]},
            "jax_version": runs[0]["version"], "python": platform.python_version(),
            "source": runs[0]["path"],
            "machine": f"{platform.machine()}, {platform.processor() or 'unknown cpu'}",
            "repeats": repeats}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    print(f"import jax: {result['jax']:.2f} s; import gatedrnn after it: "
          f"{result['gatedrnn']:.2f} s (JAX {result['jax_version']}, median of "
          f"{args.repeats} processes; {result['source']})")
    for name, seconds in sorted(result["lazy"].items(), key=lambda kv: -kv[1]):
        print(f"  gr.{name}, when first used: {seconds:.2f} s")
    return result


if __name__ == "__main__":
    main()
