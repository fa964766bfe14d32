"""gatedrnn: recurrent cells as pure JAX functions, and instruments to look inside them.

Quick tour::

    import jax, gatedrnn as gr
    cell = gr.lstm(hidden_size=128)
    params = cell.init(jax.random.key(0), input_size=32)
    carry, ys = gr.unroll(cell, params, xs)        # xs [batch, time, 32] -> ys [batch, time, 128]
"""

from gatedrnn import (
    diagnostics,
    interop,
    models,
    modules,
    plots,
    sweeps,
    tasks,
    train,
    workarounds,
)
from gatedrnn.cells import ACTIVATIONS, Cell, LSTMCarry, gru, lstm, num_params, rnn
from gatedrnn.sweeps import sweep
from gatedrnn.unroll import (
    Bidirectional,
    BidirectionalCarry,
    Stack,
    bidirectional,
    reverse_valid,
    stack,
    unroll,
)
from gatedrnn.wrappers import DropoutCarry, learned_initial_carry, recurrent_dropout

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "Bidirectional", "BidirectionalCarry", "Cell", "DropoutCarry", "LSTMCarry",
    "Stack", "bidirectional", "diagnostics", "gru", "interop", "learned_initial_carry", "lstm",
    "models", "modules", "num_params", "plots", "recurrent_dropout", "reverse_valid", "rnn",
    "stack", "sweep", "sweeps", "tasks", "train", "unroll", "workarounds",
]
