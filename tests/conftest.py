"""Test configuration shared by every test module.

Float64 is enabled so NumPy references in float64 can be compared tightly; tests that check
float32 behaviour ask for float32 explicitly. Matmul precision is pinned to "highest" because
GPUs default to TF32 for float32 matmuls.
"""

import jax

import gatedrnn  # noqa: F401  (importing it first avoids JAX 0.10's CPU deadlock)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")

# pytest-xdist (pyproject.toml) hands each worker whole files in the order collected (with
# --no-loadscope-reorder; by default it would reorder them by their number of tests). The
# longest files go first and the short ones fill in after, so that no long file starts
# last: test_experiments.py alone (a module fixture that runs every experiment) is about a
# quarter of the suite's CPU time, and started mid-run it kept CI 2 minutes past an even
# split of the work.
LONG_FILES_FIRST = ("test_experiments.py", "test_paper_scale.py", "test_deferred.py",
                    "test_sweeps.py", "test_benchmarks.py", "test_unroll.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else unchanged
