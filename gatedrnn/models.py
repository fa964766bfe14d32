"""Sequence models: an optional input layer, a recurrent layer and a linear readout, as pure
init/apply."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gatedrnn import checks
from gatedrnn.scan import ScanOptions, unroll


class SequenceModel(NamedTuple):
    """``[embed ->] layer -> [dropout ->] readout``.

    ``params = {"embed": {"w": [I, E], "b": [E]} (only with embed), "rnn": layer params,
    "readout": {"w": [H_out, O], "b": [O]}}``. The embedding is a dense layer (an embedding
    table when the inputs are one-hot). ``dropout`` (a rate; may be traced, to sweep it) drops
    the layer's outputs before the readout, with a fresh mask per step (the non-recurrent
    dropout of Zaremba et al. 2014); it is on only when ``apply`` gets a key. Dropout between
    stacked layers is :func:`gatedrnn.stack`'s, recurrent dropout
    :func:`gatedrnn.recurrent_dropout`'s; the same key switches them on. ``options`` (a
    :class:`gatedrnn.ScanOptions`, or ``None`` for :func:`gatedrnn.unroll`'s defaults) is how
    the layer is unrolled: ``method="parallel"`` trains the mLSTM in its whole-sequence form,
    ``method="associative"`` a linear cell with the parallel prefix scan.
    """

    layer: Any
    output_size: int
    readout: str
    embed: int | None = None
    dropout: Any = 0.0
    options: ScanOptions | None = None

    def init(self, key, input_size: int) -> dict:
        """Layer params from ``layer.init``; dense layers' ``w`` LeCun normal, ``b`` zeros."""
        checks.key(key, "key", required=True)
        k_emb, k_rnn, k_out = jax.random.split(key, 3)
        params = {}
        if self.embed is not None:
            params["embed"] = _dense(k_emb, input_size, self.embed)
            input_size = self.embed
        params["rnn"] = self.layer.init(k_rnn, input_size)
        params["readout"] = _dense(k_out, self.layer.output_size, self.output_size)
        return params

    def features(self, params, xs, *, key=None, lengths=None):
        """The layer's outputs ``ys [B, T, H_out]`` for inputs ``xs [B, T, I]`` (before
        dropout)."""
        if self.embed is not None:
            xs = xs @ params["embed"]["w"] + params["embed"]["b"]
        return unroll(self.layer, params["rnn"], xs, lengths=lengths, key=key,
                      options=self.options)[1]

    def head(self, params, ys, lengths=None, *, key=None):
        """The readout of layer outputs ``ys [B, T, H_out]``: ``[B, O]`` at the last valid step
        (``readout="last"``) or ``[B, T, O]`` (``"all"``). ``key`` switches dropout on."""
        if self.readout == "last":
            if ys.shape[1] == 0:
                raise ValueError(f"xs has no time steps (outputs of shape {ys.shape}); "
                                 "readout 'last' needs at least one step to read")
            if lengths is None:
                ys = ys[:, -1]
            else:
                ys = jnp.take_along_axis(ys, jnp.maximum(lengths - 1, 0)[:, None, None], 1)[:, 0]
        if key is not None and not checks.is_zero(self.dropout):
            keep = 1.0 - self.dropout
            ys = ys * jax.random.bernoulli(key, keep, ys.shape) / keep
        return ys @ params["readout"]["w"] + params["readout"]["b"]

    def apply(self, params, xs, *, key=None, lengths=None):
        """Predictions for inputs ``xs [B, T, I]``; ``key`` switches every dropout on."""
        k_layer = k_head = None
        if key is not None:
            k_layer, k_head = jax.random.split(key)
        ys = self.features(params, xs, key=k_layer, lengths=lengths)
        return self.head(params, ys, lengths, key=k_head)


def _dense(key, fan_in: int, fan_out: int) -> dict:
    return {"w": jax.nn.initializers.lecun_normal()(key, (fan_in, fan_out)),
            "b": jnp.zeros((fan_out,))}


def sequence_model(layer, output_size: int, *, readout: str = "last", embed: int | None = None,
                   dropout: Any = 0.0, options: ScanOptions | None = None) -> SequenceModel:
    """A recurrent layer with a linear readout of size ``output_size`` (see SequenceModel).

    Args:
        layer: a cell, :func:`gatedrnn.stack` or :func:`gatedrnn.bidirectional` layer.
        output_size: O, the readout's width.
        readout: ``"last"`` (predict from the last valid step) or ``"all"`` (every step).
        embed: width of an input dense layer (embedding), or ``None`` for none.
        dropout: rate in ``[0, 1)`` on the layer's outputs during training.
        options: how the layer is unrolled (:class:`gatedrnn.ScanOptions`); ``None``: the
            defaults of :func:`gatedrnn.unroll`.
    """
    if readout not in ("last", "all"):
        raise ValueError(f"readout must be 'last' or 'all'; got {readout!r}")
    output_size = checks.size(output_size, "output_size")
    embed = None if embed is None else checks.size(embed, "embed")
    checks.rate(dropout, "dropout")
    if options is not None and not isinstance(options, ScanOptions):
        raise TypeError(f"options must be a gr.ScanOptions or None; got "
                        f"{type(options).__name__} {options!r}")
    return SequenceModel(layer, output_size, readout, embed, dropout, options)


__all__ = ["SequenceModel", "sequence_model"]
