"""Recurrent cells as pure functions, one file per family.

========================  ====================================================================
file                      what it holds
========================  ====================================================================
``cells/base.py``         the protocol (:class:`Layer`, :class:`StepLayer`,
                          :class:`SequenceLayer`), :class:`Cell`, :func:`make_cell`,
                          :func:`cell_factory` and the initialisers the families share
``cells/products.py``     :func:`recurrent_matmul` (plain and head-wise) and the input half
``cells/rnn.py``          the vanilla (Elman) RNN, :func:`rnn`
``cells/lstm.py``         the LSTM, :func:`lstm`
``cells/gru.py``          the GRU, :func:`gru`
``cells/minimal.py``      minGRU and minLSTM (Feng et al. 2024)
``cells/lru.py``          the linear recurrent unit (Orvieto et al. 2023)
``cells/xlstm.py``        xLSTM's sLSTM and mLSTM (Beck et al. 2024)
``cells/griffin.py``      Griffin's RG-LRU (De et al. 2024)
========================  ====================================================================

Each family's file opens with its equations. The factories are also this package's attributes
(``gatedrnn.cells.lstm`` is the function, as ``gr.lstm``); a family's module is reached by its
path (``from gatedrnn.cells.lstm import LSTMCarry``). The backend rules
:data:`TRANSPOSED_COPY_ROWS` and :data:`ONE_FEATURE_DOT` are read from here when a call is
traced, so setting ``gatedrnn.cells.TRANSPOSED_COPY_ROWS`` takes effect.
"""

from gatedrnn.cells.base import (
    ACTIVATIONS,
    Carry,
    Cell,
    Layer,
    Params,
    SequenceLayer,
    StepLayer,
    cell_factory,
    make_cell,
    num_params,
)
from gatedrnn.cells.griffin import rg_lru
from gatedrnn.cells.gru import gru
from gatedrnn.cells.lru import lru
from gatedrnn.cells.lstm import LSTMCarry, lstm
from gatedrnn.cells.minimal import min_gru, min_lstm
from gatedrnn.cells.products import (
    ONE_FEATURE_DOT,
    TRANSPOSED_COPY_ROWS,
    recurrent_matmul,
    recurrent_product,
)
from gatedrnn.cells.rnn import rnn
from gatedrnn.cells.xlstm import MLSTMCarry, SLSTMCarry, mlstm, slstm

__all__ = ["ACTIVATIONS", "Carry", "Cell", "LSTMCarry", "Layer", "MLSTMCarry", "ONE_FEATURE_DOT",
           "Params", "SLSTMCarry",
           "SequenceLayer", "StepLayer", "TRANSPOSED_COPY_ROWS", "cell_factory", "gru", "lru",
           "lstm", "make_cell", "min_gru", "min_lstm", "mlstm", "num_params", "recurrent_matmul",
           "recurrent_product", "rg_lru", "rnn", "slstm"]
