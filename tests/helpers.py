"""Small helpers shared by the tests."""

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


def to_numpy(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), tree)
