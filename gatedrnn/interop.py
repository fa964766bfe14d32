"""Parameter conversion to and from PyTorch's ``nn.RNN/LSTM/GRU`` and Flax linen cells.

PyTorch keeps two biases per layer (``bias_ih`` and ``bias_hh``); gatedrnn keeps one wherever
the two are only summed, so importing folds them: ``b = bias_ih + bias_hh`` for the RNN and
LSTM, and for the GRU ``b[r, z] = b_ir + b_hr`` (and z), ``b[n] = b_in``, ``b_hn = b_hn``. The
fold is exact in function but not invertible: exporting puts the whole bias in ``bias_ih`` and
zeros in ``bias_hh`` (except the GRU's ``b_hn``). Note that two summed biases learn at twice
the plain-SGD rate of one, so training after a round trip is not bit-identical.

PyTorch and Flax store ``weight_ih [G*H, I]`` and kernels ``[I, H]`` per gate; gatedrnn stores
``w_x [I, G*H]`` and ``w_h [H, G*H]`` in PyTorch's gate order (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gatedrnn.cells import ACTIVATIONS, Cell, gru, lstm, rnn
from gatedrnn.cells.products import dense_recurrent
from gatedrnn.compose import Bidirectional, Stack, bidirectional, stack

_TORCH_KINDS = ("RNN", "LSTM", "GRU")


def _numpy(tensor) -> np.ndarray:
    """A tensor's values as NumPy, bfloat16 (which NumPy lacks) and float16 widened to
    float32, so the folded biases are summed once, in float32, before the params are cast
    back to the module's dtype."""
    import torch
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()


def from_torch(module) -> tuple[Any, Any]:
    """Converts a ``torch.nn.RNN``, ``LSTM`` or ``GRU`` into ``(cell, params)`` for ``unroll``.

    ``num_layers > 1`` gives a :func:`gatedrnn.stack` (with the module's ``dropout``) and
    ``bidirectional=True`` gives :func:`gatedrnn.bidirectional` layers with ``merge="concat"``
    (PyTorch's output layout). The pair matches the module when run as
    ``gr.unroll(cell, params, x, time_major=not module.batch_first)``; the final carry of
    layer ``l`` holds PyTorch's ``h_n[l]`` (and ``c_n[l]``). The LSTM's cell is made with
    ``forget_bias=0`` so that its config matches PyTorch's; the imported biases carry over.
    An LSTM with ``proj_size=P`` becomes ``gr.lstm(H, proj_size=P)`` with ``w_hr =
    weight_hr.T``.

    A bfloat16 or float16 module gives params of its dtype (PyTorch's two biases summed
    once in float32 first).

    Raises:
        TypeError: for a module of another type.
        ValueError: for a weight or bias of another shape than the module's sizes need,
            naming the attribute and both shapes.
    """
    import torch

    kinds = [k for k in _TORCH_KINDS if isinstance(module, getattr(torch.nn, k))]
    if not kinds:
        raise TypeError(f"module must be torch.nn.RNN, LSTM or GRU; got "
                        f"{type(module).__name__}")
    name = kinds[0]  # a subclass converts as its base class
    hidden = module.hidden_size
    proj = getattr(module, "proj_size", 0) or None
    if name == "LSTM":
        cell = lstm(hidden, forget_bias=0.0, proj_size=proj)
    elif name == "GRU":
        cell = gru(hidden, reset_after=True)
    else:
        cell = rnn(hidden, activation=module.nonlinearity)

    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[name]
    dtype = jnp.dtype(str(module.weight_ih_l0.dtype).removeprefix("torch."))
    state = proj or hidden  # what the recurrent product reads: h, or its projection

    def tensor(attr: str, shape: tuple) -> np.ndarray:
        value = getattr(module, attr)
        if tuple(value.shape) != shape:
            raise ValueError(f"{type(module).__name__}.{attr} has shape {tuple(value.shape)}; "
                             f"{name}(input_size={module.input_size}, hidden_size={hidden}"
                             f"{f', proj_size={proj}' if proj else ''}) needs {shape}")
        return _numpy(value)

    def direction(layer: int, suffix: str) -> dict:
        inputs = module.input_size if layer == 0 else state * (2 if module.bidirectional
                                                               else 1)
        w_ih = tensor(f"weight_ih_l{layer}{suffix}", (gates * hidden, inputs))
        w_hh = tensor(f"weight_hh_l{layer}{suffix}", (gates * hidden, state))
        if module.bias:
            b_ih = tensor(f"bias_ih_l{layer}{suffix}", (gates * hidden,))
            b_hh = tensor(f"bias_hh_l{layer}{suffix}", (gates * hidden,))
        else:
            b_ih = b_hh = np.zeros(w_ih.shape[0], w_ih.dtype)
        params = {"w_x": w_ih.T, "w_h": w_hh.T}
        if proj is not None:
            params["w_hr"] = tensor(f"weight_hr_l{layer}{suffix}", (proj, hidden)).T
        if name == "GRU":
            params["b"] = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros_like(b_hh[:hidden])])
            params["b_hn"] = b_hh[2 * hidden :]
        else:
            params["b"] = b_ih + b_hh
        return {k: jnp.asarray(v, dtype) for k, v in params.items()}

    layers, params = [], []
    for layer in range(module.num_layers):
        if module.bidirectional:
            layers.append(bidirectional(cell, cell, merge="concat"))
            params.append({"fwd": direction(layer, ""), "bwd": direction(layer, "_reverse")})
        else:
            layers.append(cell)
            params.append(direction(layer, ""))
    if len(layers) == 1:
        return layers[0], params[0]
    return stack(layers, dropout=float(module.dropout)), tuple(params)


def _torch_cell_kind(cell: Cell) -> str:
    """The ``torch.nn`` class that computes ``cell`` exactly, or a ValueError saying why not."""
    cfg = cell.config
    if cell.kind == "lstm" and not cfg["peepholes"] and not cfg["coupled"]:
        return "LSTM"
    if cell.kind == "gru" and cfg["reset_after"]:
        return "GRU"
    if cell.kind == "rnn" and cfg["activation"] in ("tanh", "relu"):
        return "RNN"
    raise ValueError(
        f"cell has no torch.nn equivalent: kind={cell.kind!r} with config "
        f"{ {k: v for k, v in cfg.items() if k not in ('dtype', 'param_dtype')} }; PyTorch has "
        "LSTMs without peepholes or coupling, reset-after GRUs and tanh/relu RNNs"
    )


def to_torch(cell, params, *, batch_first: bool = True):
    """Builds the ``torch.nn.RNN``, ``LSTM`` or ``GRU`` that computes ``cell`` with ``params``.

    The inverse of :func:`from_torch` up to the bias fold: each layer's bias goes to
    ``bias_ih`` and ``bias_hh`` is zero (the GRU's ``b_hn`` goes to ``bias_hh``'s n block).
    Accepts a cell, a bidirectional pair of cells (``merge="concat"``), or a stack of either
    with equal hidden sizes and no residual connections.
    """
    import torch

    layers = list(cell.layers) if isinstance(cell, Stack) else [cell]
    layer_params = list(params) if isinstance(cell, Stack) else [params]
    if isinstance(cell, Stack) and cell.residual:
        raise ValueError("cell: torch.nn modules have no residual connections; got residual=True")
    directions = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Bidirectional):
            if layer.merge != "concat":
                raise ValueError(f"layer {i}: torch.nn concatenates directions; got merge="
                                 f"{layer.merge!r}")
            directions.append([(layer.fwd, layer_params[i]["fwd"]),
                               (layer.bwd, layer_params[i]["bwd"])])
        elif isinstance(layer, Cell):
            directions.append([(layer, layer_params[i])])
        else:
            raise ValueError(f"layer {i}: expected a Cell or a bidirectional pair of cells; "
                             f"got {type(layer).__name__}")
    base = directions[0][0][0]
    kind = _torch_cell_kind(base)
    bidir = len(directions[0]) == 2
    for i, dirs in enumerate(directions):
        for c, _ in dirs:
            if (_torch_cell_kind(c) != kind or c.hidden_size != base.hidden_size
                    or c.output_size != base.output_size):
                raise ValueError(f"layer {i}: torch.nn needs one cell kind and hidden size in all "
                                 f"layers; got {c.kind} H={c.hidden_size} after {kind} "
                                 f"H={base.hidden_size}")
        if (len(dirs) == 2) != bidir:
            raise ValueError("torch.nn needs every layer bidirectional or none")
    first = directions[0][0][1]
    # float64 stays float64; every other dtype (bfloat16, float16) becomes float32
    dtype = torch.float64 if np.asarray(first["w_x"]).dtype == np.float64 else torch.float32
    kwargs = dict(
        input_size=int(first["w_x"].shape[0]), hidden_size=base.hidden_size,
        num_layers=len(directions), bias=True, batch_first=batch_first, bidirectional=bidir,
        dropout=float(cell.dropout) if isinstance(cell, Stack) else 0.0,
    )
    if kind == "RNN":
        kwargs["nonlinearity"] = base.config["activation"]
    if kind == "LSTM" and base.config["proj_size"]:
        kwargs["proj_size"] = base.config["proj_size"]
    module = getattr(torch.nn, kind)(**kwargs).to(dtype)
    hidden = base.hidden_size
    with torch.no_grad():
        for layer, dirs in enumerate(directions):
            for (_, p), suffix in zip(dirs, ["", "_reverse"]):
                b_hh = np.zeros_like(np.asarray(p["b"]))
                if kind == "GRU":
                    b_hh[2 * hidden :] = np.asarray(p["b_hn"])
                values = {"weight_ih": np.asarray(p["w_x"]).T,
                          "weight_hh": np.asarray(dense_recurrent(p["w_h"])).T,
                          "bias_ih": np.asarray(p["b"]), "bias_hh": b_hh}
                if "proj_size" in kwargs:
                    values["weight_hr"] = np.asarray(p["w_hr"]).T
                for attr, value in values.items():
                    target = getattr(module, f"{attr}_l{layer}{suffix}")
                    target.copy_(torch.tensor(np.asarray(value, np.float64), dtype=dtype))
    return module


_FLAX_LSTM_GATES = ("i", "f", "g", "o")
_FLAX_GRU_GATES = ("r", "z", "n")


def _flax_params(variables) -> dict:
    tree = variables.get("params", variables)
    return jax.tree.map(jnp.asarray, dict(tree))


def from_flax(module, variables) -> tuple[Cell, dict]:
    """Converts a Flax linen cell and its variables into ``(cell, params)``.

    Supports ``nn.SimpleCell`` (tanh, relu or another elementwise activation, no
    ``residual``), ``nn.LSTMCell`` and ``nn.OptimizedLSTMCell`` (which share one parameter
    layout: kernels ``ii, if, ig, io`` and biased ``hi, hf, hg, ho``), and ``nn.GRUCell``
    (biased ``ir, iz, in``, unbiased ``hr, hz``, biased ``hn``: the reset-after form).
    Flax's LSTM carry is ``(c, h)``; gatedrnn's is ``LSTMCarry(h, c)``.

    Args:
        module: the Flax cell (its ``features`` gives H).
        variables: ``module.init(...)``'s result, or its ``"params"`` entry.
    """
    import flax.linen as nn

    p = _flax_params(variables)
    hidden = module.features
    expected = {"LSTMCell": _FLAX_LSTM_GATES, "OptimizedLSTMCell": _FLAX_LSTM_GATES,
                "GRUCell": _FLAX_GRU_GATES, "SimpleCell": ("",)}.get(type(module).__name__)
    names = {f"{side}{g}" for side in "ih" for g in (expected or ())}
    if expected is not None and not names <= set(p):
        raise ValueError(f"variables do not hold the params of a {type(module).__name__}: "
                         f"expected entries {sorted(names)}, got {sorted(p)}")

    def kernels(prefix, names):
        return jnp.concatenate([p[f"{prefix}{n}"]["kernel"] for n in names], axis=1)

    def biases(prefix, names):
        return jnp.concatenate([p[f"{prefix}{n}"]["bias"] for n in names])

    def check_fns(gate_fn, activation_fn):
        if gate_fn is not jax.nn.sigmoid or activation_fn is not jnp.tanh:
            raise ValueError(f"{type(module).__name__}: only the default gate_fn (sigmoid) and "
                             "activation_fn (tanh) have a gatedrnn equivalent")

    if isinstance(module, (nn.LSTMCell, nn.OptimizedLSTMCell)):
        check_fns(module.gate_fn, module.activation_fn)
        params = {"w_x": kernels("i", _FLAX_LSTM_GATES), "w_h": kernels("h", _FLAX_LSTM_GATES),
                  "b": biases("h", _FLAX_LSTM_GATES)}
        return lstm(hidden, forget_bias=0.0), params
    if isinstance(module, nn.GRUCell):
        check_fns(module.gate_fn, module.activation_fn)
        params = {"w_x": kernels("i", _FLAX_GRU_GATES), "w_h": kernels("h", _FLAX_GRU_GATES),
                  "b": biases("i", _FLAX_GRU_GATES), "b_hn": p["hn"]["bias"]}
        return gru(hidden, reset_after=True), params
    if isinstance(module, nn.SimpleCell):
        if module.residual:
            raise ValueError("SimpleCell with residual=True has no gatedrnn equivalent")
        named = {jnp.tanh: "tanh", jax.nn.relu: "relu"}
        activation = named.get(module.activation_fn, module.activation_fn)
        params = {"w_x": p["i"]["kernel"], "w_h": p["h"]["kernel"], "b": p["i"]["bias"]}
        return rnn(hidden, activation=activation), params
    raise TypeError(f"module must be a flax.linen SimpleCell, LSTMCell, OptimizedLSTMCell or "
                    f"GRUCell; got {type(module).__name__}")


def to_flax(cell: Cell, params: dict, *, optimized: bool = False):
    """Builds the Flax linen cell and ``{"params": ...}`` variables that compute ``cell``.

    The inverse of :func:`from_flax`. An LSTM becomes ``nn.LSTMCell`` (or
    ``nn.OptimizedLSTMCell`` with ``optimized=True``), a reset-after GRU ``nn.GRUCell`` and an
    RNN ``nn.SimpleCell``.
    """
    import flax.linen as nn

    hidden = cell.hidden_size

    def blocks(matrix, names):
        return dict(zip(names, jnp.split(jnp.asarray(matrix), len(names), axis=-1)))

    if (cell.kind == "lstm" and not cell.config["peepholes"] and not cell.config["coupled"]
            and not cell.config["proj_size"]):
        w_x = blocks(params["w_x"], _FLAX_LSTM_GATES)
        w_h = blocks(dense_recurrent(params["w_h"]), _FLAX_LSTM_GATES)
        b = blocks(params["b"], _FLAX_LSTM_GATES)
        tree = {f"i{n}": {"kernel": w_x[n]} for n in _FLAX_LSTM_GATES}
        tree |= {f"h{n}": {"kernel": w_h[n], "bias": b[n]} for n in _FLAX_LSTM_GATES}
        module = (nn.OptimizedLSTMCell if optimized else nn.LSTMCell)(features=hidden)
        return module, {"params": tree}
    if cell.kind == "gru" and cell.config["reset_after"]:
        w_x = blocks(params["w_x"], _FLAX_GRU_GATES)
        w_h = blocks(dense_recurrent(params["w_h"]), _FLAX_GRU_GATES)
        b = blocks(params["b"], _FLAX_GRU_GATES)
        tree = {f"i{n}": {"kernel": w_x[n], "bias": b[n]} for n in _FLAX_GRU_GATES}
        tree |= {f"h{n}": {"kernel": w_h[n]} for n in ("r", "z")}
        tree["hn"] = {"kernel": w_h["n"], "bias": jnp.asarray(params["b_hn"])}
        return nn.GRUCell(features=hidden), {"params": tree}
    if cell.kind == "rnn":
        activation = cell.config["activation"]
        fn = ACTIVATIONS[activation] if isinstance(activation, str) else activation
        tree = {"i": {"kernel": jnp.asarray(params["w_x"]), "bias": jnp.asarray(params["b"])},
                "h": {"kernel": jnp.asarray(dense_recurrent(params["w_h"]))}}
        return nn.SimpleCell(features=hidden, activation_fn=fn), {"params": tree}
    raise ValueError(f"cell kind {cell.kind!r} with config {dict(cell.config)} has no Flax linen "
                     "equivalent (LSTMs without peepholes, coupling or projection, reset-after "
                     "GRUs, RNNs)")


__all__ = ["from_flax", "from_torch", "to_flax", "to_torch"]
