"""The linear recurrent unit (Orvieto et al. 2023, eqs. 3-7), a diagonal linear recurrence::

    λ = exp(-exp(nu_log) + i exp(theta_log))
    s_t = λ ⊙ s_{t-1} + exp(gamma_log) ⊙ (x_t @ (b_re + i b_im))
    h_t = [Re s_t, Im s_t]

complex (the paper's) or real; ``|λ| < 1`` for any params. Options in :func:`lru`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from gatedrnn import checks
from gatedrnn.cells.base import Cell, Params, _check_common, cell_factory, make_cell


@cell_factory
def lru(
    hidden_size: int,
    *,
    complex_state: bool = True,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """A diagonal linear recurrent unit (the LRU of Orvieto et al. 2023, eqs. 3-7).

    The state ``s [*B, N]`` (N = ``hidden_size``) evolves elementwise::

        λ = exp(-exp(nu_log) + i exp(theta_log))      (real: λ = exp(-exp(nu_log)))
        s_t = λ ⊙ s_{t-1} + exp(gamma_log) ⊙ (x_t @ (b_re + i b_im))
        h_t = [Re s_t, Im s_t]                         (real: h_t = s_t)

    ``|λ| = exp(-exp(nu_log)) < 1`` for any parameter values (the stable exponential
    parameterisation); ``gamma_log`` starts at ``log sqrt(1 - |λ|^2)`` (the normalisation).
    The paper's readout ``Re(C s_t) = [C_re, -C_im] @ [Re s_t; Im s_t]`` is a linear map of
    ``h_t``, so it is the next layer's input projection here (as is its skip ``D x_t``).

    ==========  ==========  =====================================================
    name        shape       init
    ==========  ==========  =====================================================
    nu_log      [N]         ``|λ|`` uniform on the ring ``[r_min, r_max]``
    theta_log   [N]         ``log(max_phase * U[0, 1])`` (complex only)
    gamma_log   [N]         ``log sqrt(1 - |λ|^2)``
    b_re        [I, N]      ``N(0, 1 / (2 I))`` (``N(0, 1 / I)`` when real)
    b_im        [I, N]      ``N(0, 1 / (2 I))`` (complex only)
    ==========  ==========  =====================================================

    The carry is the complex (or real) state; the output has ``2N`` features (``N`` real).
    Linear in the state: ``unroll(..., options=ScanOptions(method="associative"))`` runs it
    as a parallel scan.

    Args:
        hidden_size: N, the state size.
        complex_state: complex diagonal (the paper) or real diagonal.
        r_min: the inner radius of the ring of initial eigenvalue magnitudes.
        r_max: its outer radius (close to 1: long memory).
        max_phase: initial phases are uniform in ``[0, max_phase]``.
        dtype: computation dtype (``None``: promote inputs and params).
        param_dtype: dtype of the initialised params (real).
    """
    hidden_size = _check_common(hidden_size, param_dtype, max_phase=max_phase)
    checks.real(r_min, "r_min", at_least=0.0)
    checks.real(r_max, "r_max", below=1.0)
    if not r_min < r_max:
        raise ValueError(f"need 0 <= r_min < r_max < 1; got r_min={r_min!r}, r_max={r_max!r}")
    n = hidden_size

    def magnitude_log(params):  # log |λ| = -exp(nu_log)
        return -jnp.exp(params["nu_log"])

    def init(key: PRNGKeyArray, input_size: int) -> Params:
        input_size = checks.size(input_size, "input_size")
        k_nu, k_th, k_re, k_im = jax.random.split(key, 4)
        u = jax.random.uniform(k_nu, (n,), jnp.float32)
        nu_log = jnp.log(-0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2))
        scale = (2 * input_size if complex_state else input_size) ** -0.5
        params = {"nu_log": nu_log,
                  "gamma_log": 0.5 * jnp.log1p(-jnp.exp(-2.0 * jnp.exp(nu_log))),
                  "b_re": scale * jax.random.normal(k_re, (input_size, n))}
        if complex_state:
            params["theta_log"] = jnp.log(max_phase * jax.random.uniform(k_th, (n,)))
            params["b_im"] = scale * jax.random.normal(k_im, (input_size, n))
        return jax.tree.map(lambda v: v.astype(param_dtype), params)

    def project(params, x):
        u = x @ params["b_re"]
        if complex_state:
            u = jax.lax.complex(u, x @ params["b_im"])
        return u * jnp.exp(params["gamma_log"])

    def core(params, s_tm1, u_t):
        if complex_state:
            lam = jnp.exp(jax.lax.complex(magnitude_log(params), jnp.exp(params["theta_log"])))
        else:
            lam = jnp.exp(magnitude_log(params))
        s_t = lam * s_tm1 + u_t
        return s_t, output(s_t)

    def output(s):
        return jnp.concatenate([s.real, s.imag], axis=-1) if complex_state else s

    def initial_carry(batch_shape, *, dtype, **_):
        dt = jnp.result_type(dtype, jnp.complex64) if complex_state else dtype
        return jnp.zeros((*batch_shape, n), dt)

    return make_cell(init, core, hidden_size=n, kind="lru", project=project,
                     initial_carry=initial_carry, output=output,
                     input_size=lambda p: p["b_re"].shape[0],
                     output_size=2 * n if complex_state else n, linear=True, dtype=dtype)

