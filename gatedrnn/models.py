"""Sequence models: a recurrent layer followed by a linear readout, as pure init/apply."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gatedrnn.unroll import unroll


class SequenceModel(NamedTuple):
    """``layer`` (a cell, stack or bidirectional layer) then a linear readout.

    ``params = {"rnn": layer params, "readout": {"w": [H_out, O], "b": [O]}}``;
    ``apply(params, xs, *, key=None, lengths=None)`` returns ``[B, O]`` predictions from the
    last valid step (``readout="last"``) or ``[B, T, O]`` from every step (``"all"``).
    """

    layer: Any
    output_size: int
    readout: str

    def init(self, key, input_size: int) -> dict:
        """Layer params from ``layer.init``; readout ``w`` LeCun normal, ``b`` zeros."""
        k_rnn, k_out = jax.random.split(key)
        hidden = self.layer.output_size
        w = jax.nn.initializers.lecun_normal()(k_out, (hidden, self.output_size))
        return {"rnn": self.layer.init(k_rnn, input_size),
                "readout": {"w": w, "b": jnp.zeros((self.output_size,))}}

    def features(self, params, xs, *, key=None, lengths=None):
        """The layer's outputs ``ys [B, T, H_out]``."""
        return unroll(self.layer, params["rnn"], xs, lengths=lengths, key=key)[1]

    def head(self, params, ys, lengths=None):
        """The readout applied to layer outputs ``ys [B, T, H_out]``."""
        if self.readout == "last":
            if lengths is None:
                ys = ys[:, -1]
            else:
                ys = jnp.take_along_axis(ys, jnp.maximum(lengths - 1, 0)[:, None, None], 1)[:, 0]
        return ys @ params["readout"]["w"] + params["readout"]["b"]

    def apply(self, params, xs, *, key=None, lengths=None):
        """Predictions for inputs ``xs [B, T, I]``."""
        return self.head(params, self.features(params, xs, key=key, lengths=lengths), lengths)


def sequence_model(layer, output_size: int, *, readout: str = "last") -> SequenceModel:
    """A recurrent layer with a linear readout of size ``output_size`` (see SequenceModel)."""
    if readout not in ("last", "all"):
        raise ValueError(f"readout must be 'last' or 'all'; got {readout!r}")
    if not isinstance(output_size, int) or output_size < 1:
        raise ValueError(f"output_size must be a positive int; got {output_size!r}")
    return SequenceModel(layer, output_size, readout)


__all__ = ["SequenceModel", "sequence_model"]
