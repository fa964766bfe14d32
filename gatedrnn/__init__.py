"""gatedrnn: recurrent cells as pure JAX functions, and instruments to look inside them.

Quick tour::

    import jax, gatedrnn as gr
    cell = gr.lstm(hidden_size=128)                 # or gr.make_cell(init, core, ...)
    params = cell.init(jax.random.key(0), input_size=32)
    carry, ys = gr.unroll(cell, params, xs)        # xs [batch, time, 32] -> ys [batch, time, 128]
"""

import importlib

from gatedrnn import checks, compose, diagnostics, workarounds
from gatedrnn.cells import (
    ACTIVATIONS,
    Cell,
    Layer,
    LSTMCarry,
    SequenceLayer,
    StepLayer,
    cell_factory,
    gru,
    lru,
    lstm,
    make_cell,
    min_gru,
    min_lstm,
    mlstm,
    num_params,
    recurrent_matmul,
    rg_lru,
    rnn,
    slstm,
)
from gatedrnn.compose import Bidirectional, BidirectionalCarry, Stack, bidirectional, stack
from gatedrnn.scan import ScanOptions, check_layer, reverse_valid, unroll
from gatedrnn.wrappers import DropoutCarry, learned_initial_carry, recurrent_dropout

__version__ = "0.2.0"

workarounds.apply_on_import()

# imported when first used, so that `import gatedrnn` costs little beyond `import jax`: these
# bring flax, optax, orbax and matplotlib (benchmarks/import_time.py)
_LAZY_MODULES = ("interop", "mlstm", "models", "modules", "plots", "sweeps", "tasks", "train")
_LAZY_NAMES = {"sweep": "sweeps", "SweepResult": "sweeps"}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"gatedrnn.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"gatedrnn.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'gatedrnn' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY_MODULES, *_LAZY_NAMES})


__all__ = [
    "ACTIVATIONS", "Bidirectional", "BidirectionalCarry", "Cell", "DropoutCarry", "LSTMCarry",
    "Layer", "ScanOptions", "SequenceLayer", "Stack", "StepLayer", "SweepResult",
    "bidirectional", "cell_factory", "check_layer", "checks", "compose", "diagnostics", "gru",
    "interop", "learned_initial_carry", "lru", "lstm", "make_cell", "min_gru", "min_lstm",
    "mlstm", "models", "modules", "num_params", "plots", "recurrent_dropout", "recurrent_matmul",
    "reverse_valid", "rg_lru", "rnn", "slstm", "stack", "sweep", "sweeps", "tasks", "train",
    "unroll", "workarounds",
]
