"""Parity with torch.nn.RNN/LSTM/GRU and Flax linen cells through the converters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gatedrnn as gr

torch = pytest.importorskip("torch")

PARITY_TOL = 1e-10  # float64 on both sides
I, H, T, B = 3, 5, 7, 4


def _torch_module(kind, **kwargs):
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(I, H, **kwargs).double()
    with torch.no_grad():  # biases of PyTorch's init are small; make every term count
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)
    return module


def _torch_final(module, state):
    if isinstance(module, torch.nn.LSTM):
        h_n, c_n = state
        return h_n.detach().numpy(), c_n.detach().numpy()
    return state.detach().numpy(), None


def _our_final(cell, carry):
    """Final carries arranged as PyTorch's h_n/c_n [num_layers * num_directions, B, H]."""
    layers = carry if isinstance(cell, gr.Stack) else (carry,)
    dirs = []
    for c in layers:
        dirs.extend([c.fwd, c.bwd] if isinstance(c, gr.BidirectionalCarry) else [c])
    h = np.stack([np.asarray(d.h if isinstance(d, gr.LSTMCarry) else d) for d in dirs])
    c = np.stack([np.asarray(d.c) for d in dirs]) if isinstance(dirs[0], gr.LSTMCarry) else None
    return h, c


CONFIGS = [
    ("RNN", dict(nonlinearity="tanh")),
    ("RNN", dict(nonlinearity="relu", num_layers=2)),
    ("LSTM", dict()),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=3, batch_first=True)),
    ("LSTM", dict(proj_size=2)),
    ("LSTM", dict(proj_size=3, num_layers=2, bidirectional=True, batch_first=True)),
    ("GRU", dict()),
    ("GRU", dict(bidirectional=True, batch_first=True)),
    ("GRU", dict(num_layers=2, bidirectional=True, bias=False)),
]


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_from_torch_matches_module_outputs_states_and_gradients(kind, kwargs):
    module = _torch_module(kind, **kwargs)
    cell, params = gr.interop.from_torch(module)
    batch_first = kwargs.get("batch_first", False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, I) if batch_first else (T, B, I))

    x_t = torch.tensor(x, requires_grad=True)
    out, state = module(x_t)
    (out**2).sum().backward()
    carry, ys = gr.unroll(cell, params, jnp.asarray(x), time_major=not batch_first)
    np.testing.assert_allclose(ys, out.detach().numpy(), atol=PARITY_TOL)
    for ours, theirs in zip(_our_final(cell, carry), _torch_final(module, state)):
        if theirs is not None:
            np.testing.assert_allclose(ours, theirs, atol=PARITY_TOL)

    grad_x = jax.grad(
        lambda x: jnp.sum(gr.unroll(cell, params, x, time_major=not batch_first)[1] ** 2)
    )(jnp.asarray(x))
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), atol=1e-9)
    # The weight gradient of the first layer's recurrent matrix, transposed back.
    grads = jax.grad(
        lambda p: jnp.sum(gr.unroll(cell, p, jnp.asarray(x), time_major=not batch_first)[1] ** 2)
    )(params)
    first = grads[0] if isinstance(cell, gr.Stack) else grads
    first = first["fwd"] if isinstance(first, dict) and "fwd" in first else first
    np.testing.assert_allclose(first["w_h"].T, module.weight_hh_l0.grad.numpy(), atol=1e-9)


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_to_torch_round_trip_preserves_the_function(kind, kwargs):
    module = _torch_module(kind, **kwargs)
    cell, params = gr.interop.from_torch(module)
    batch_first = kwargs.get("batch_first", False)
    rebuilt = gr.interop.to_torch(cell, params, batch_first=batch_first)
    x = torch.tensor(np.random.default_rng(1).normal(size=(B, T, I) if batch_first else (T, B, I)))
    np.testing.assert_allclose(rebuilt(x)[0].detach().numpy(), module(x)[0].detach().numpy(),
                               atol=PARITY_TOL)


def test_to_torch_from_native_params():
    cell = gr.stack([gr.bidirectional(gr.gru(H), gr.gru(H))] * 2)
    params = cell.init(jax.random.key(0), I)
    module = gr.interop.to_torch(cell, params)
    x = np.random.default_rng(2).normal(size=(B, T, I)).astype(np.float32)
    out = module(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(gr.unroll(cell, params, jnp.asarray(x))[1], out, atol=1e-5)


def test_lstm_padded_sequences_match_torch_packed_sequences():
    module = _torch_module("LSTM", bidirectional=True, batch_first=True)
    cell, params = gr.interop.from_torch(module)
    x = np.random.default_rng(3).normal(size=(B, T, I))
    lengths = np.array([7, 3, 5, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, (h_n, c_n) = module(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    carry, ys = gr.unroll(cell, params, jnp.asarray(x), lengths=jnp.asarray(lengths))
    np.testing.assert_allclose(ys, out.detach().numpy(), atol=PARITY_TOL)
    h, c = _our_final(cell, carry)
    np.testing.assert_allclose(h, h_n.detach().numpy(), atol=PARITY_TOL)
    np.testing.assert_allclose(c, c_n.detach().numpy(), atol=PARITY_TOL)


def test_projected_lstm_matches_the_docstring_and_exports_its_projection():
    cell = gr.lstm(H, proj_size=2)
    params = cell.init(jax.random.key(0), I)
    assert params["w_h"].shape == (2, 4 * H) and params["w_hr"].shape == (H, 2)
    carry = cell.initial_carry((B,), dtype=jnp.float64)
    assert carry.h.shape == (B, 2) and carry.c.shape == (B, H)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(B, I)))
    new, h_t = cell.step(params, carry, x)
    plain = gr.lstm(H)  # the projection applies to the plain LSTM's output, nothing else
    p_plain = {k: v for k, v in params.items() if k != "w_hr"}
    p_plain["w_h"] = jnp.zeros((H, 4 * H)).at[:2].set(params["w_h"])
    c_plain = gr.LSTMCarry(jnp.zeros((B, H)), carry.c)
    h_plain = plain.step(p_plain, c_plain, x)[1]
    np.testing.assert_allclose(h_t, h_plain @ params["w_hr"], atol=1e-6)
    module = gr.interop.to_torch(cell, params)
    assert module.proj_size == 2
    np.testing.assert_allclose(module.weight_hr_l0.detach().numpy(), np.asarray(params["w_hr"]).T)


def test_unsupported_conversions_are_rejected():
    with pytest.raises(ValueError, match="no Flax linen equivalent"):
        gr.interop.to_flax(gr.lstm(H, proj_size=2), gr.lstm(H, proj_size=2).init(
            jax.random.key(0), I))
    with pytest.raises(TypeError, match="module must be torch.nn.RNN, LSTM or GRU"):
        gr.interop.from_torch(torch.nn.Linear(I, H))
    cell = gr.lstm(H, peepholes=True)
    with pytest.raises(ValueError, match="no torch.nn equivalent"):
        gr.interop.to_torch(cell, cell.init(jax.random.key(0), I))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("dtype, tol", [("bfloat16", 2e-2), ("float16", 2e-3)])
def test_half_precision_modules_convert_to_params_of_their_dtype(kind, dtype, tol):
    module = _torch_module(kind, batch_first=True).to(getattr(torch, dtype))
    cell, params = gr.interop.from_torch(module)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(dtype)}
    # the same weights in float64 on both sides: the conversion lost nothing
    wide = gr.interop.from_torch(module.double())[1]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(wide)):
        np.testing.assert_array_equal(np.asarray(a, np.float64),
                                      np.asarray(jnp.asarray(b).astype(dtype), np.float64))
    xs = np.random.default_rng(0).uniform(-1, 1, (B, T, I))
    ours = gr.unroll(cell, params, jnp.asarray(xs, dtype))[1]
    theirs = module.to(getattr(torch, dtype))(torch.tensor(xs).to(getattr(torch, dtype)))[0]
    np.testing.assert_allclose(np.asarray(ours, np.float32), theirs.float().detach().numpy(),
                               atol=tol)


def test_a_torch_weight_or_bias_of_the_wrong_shape_is_named_at_import():
    module = _torch_module("GRU")
    module.bias_ih_l0 = torch.nn.Parameter(torch.zeros(3 * H + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"GRU.bias_ih_l0 has shape \({3 * H + 1},\); "
                                         rf"GRU\(input_size={I}, hidden_size={H}\) needs "
                                         rf"\({3 * H},\)"):
        gr.interop.from_torch(module)
    module = _torch_module("LSTM", num_layers=2, bidirectional=True, proj_size=2)
    module.weight_hh_l1_reverse = torch.nn.Parameter(torch.zeros(4 * H, H,
                                                                 dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"LSTM.weight_hh_l1_reverse has shape "
                                         rf"\({4 * H}, {H}\); LSTM\(input_size={I}, "
                                         rf"hidden_size={H}, proj_size=2\) needs "
                                         rf"\({4 * H}, 2\)"):
        gr.interop.from_torch(module)


FLAX_CELLS = [
    nn.SimpleCell(H),
    nn.SimpleCell(H, activation_fn=jax.nn.relu),
    nn.LSTMCell(H),
    nn.OptimizedLSTMCell(H),
    nn.GRUCell(H),
]


def _flax_carry_from(module, carry):
    return (carry.c, carry.h) if isinstance(module, (nn.LSTMCell, nn.OptimizedLSTMCell)) else carry


@pytest.mark.parametrize("module", FLAX_CELLS, ids=lambda m: type(m).__name__)
def test_from_flax_matches_flax_cell_and_round_trips(module):
    x = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
    carry_0 = module.initialize_carry(jax.random.key(2), x[:, 0].shape)
    variables = module.init(jax.random.key(0), carry_0, x[:, 0])
    variables = jax.tree.map(
        lambda v: jax.random.uniform(jax.random.key(v.size), v.shape, jnp.float64, -0.8, 0.8),
        variables)
    cell, params = gr.interop.from_flax(module, variables)
    carry, ys = gr.unroll(cell, params, x)
    flax_carry = jax.tree.map(jnp.zeros_like, _flax_carry_from(module, cell.initial_carry((B,))))
    for t in range(T):
        flax_carry, y = module.apply(variables, flax_carry, x[:, t])
        np.testing.assert_allclose(ys[:, t], y, atol=PARITY_TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=PARITY_TOL),
                 _flax_carry_from(module, carry), flax_carry)
    module_back, variables_back = gr.interop.to_flax(
        cell, params, optimized=isinstance(module, nn.OptimizedLSTMCell))
    assert type(module_back) is type(module)
    jax.tree.map(np.testing.assert_array_equal, variables_back, variables)
