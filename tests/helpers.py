"""Small helpers shared by the tests."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def randomize(params, key, scale=0.5, dtype=jnp.float64):
    """Replaces every leaf with random normal values, so no zero-initialised term hides."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [scale * jax.random.normal(k, jnp.shape(x), dtype) for k, x in
         zip(keys, leaves)],
    )


def scan_kw(**kw):
    """``gr.unroll``'s keywords with the execution settings among them (``unroll``, ``remat``,
    ``hoist``, ``method``, ``backward``) gathered into ``options=gr.ScanOptions(...)``."""
    import gatedrnn as gr
    fields = {k: kw.pop(k) for k in list(kw) if k in gr.ScanOptions.__dataclass_fields__}
    return {**kw, "options": gr.ScanOptions(**fields)} if fields else kw


def x64(enabled: bool):
    """A context with float64 on or off: ``jax.enable_x64`` (JAX >= 0.7), or its older home in
    ``jax.experimental`` (the floor versions)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(enabled)
    from jax import experimental
    return experimental.enable_x64() if enabled else experimental.disable_x64()


def to_numpy(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)


def load_script(relative_path: str):
    """Imports a script of the repo (an experiment or example) as a module."""
    path = Path(__file__).parents[1] / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module
