"""Tasks: batches generated on device from a key, a loss, metrics and known baselines.

A :class:`Task` is a value like a cell: pure functions plus static fields. ``sample(key,
batch_size) -> (xs [B, T, I], targets)`` runs under jit with no host loop. Synthetic tasks
(adding, copy, counting) draw fresh sequences from the key; data tasks (digits, char_lm,
series) load their data once on the host, draw training batches from the training split on
device, and carry a fixed held-out ``test`` set.
"""

from __future__ import annotations

import math
import os
import sysconfig
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Task(NamedTuple):
    """A supervised sequence task.

    Attributes:
        name: e.g. ``"adding(T=100)"``.
        sample: ``sample(key, batch_size) -> (xs [B, T, I], targets)``.
        loss: ``loss(predictions, targets) -> scalar``; predictions come from the model's
            readout (``[B, O]`` for ``readout="last"``).
        metrics: ``metrics(predictions, targets) -> dict`` of scalars (includes ``"loss"``).
        input_size: I; output_size: O; seq_len: T.
        readout: ``"last"`` (predict from the last step) or ``"all"`` (every step).
        baselines: name -> the metric value of a known trivial solution.
        solved: ``solved(metrics) -> bool`` array: the task's success criterion.
        test: ``None`` for synthetic tasks (evaluate on a fresh sample), or a fixed held-out
            ``(xs, targets)`` that training evaluates on.
        validation: ``None``, or a fixed held-out ``(xs, targets)`` apart from ``test`` and
            the training data, for choosing hyperparameters (``task._replace(test=
            task.validation)`` trains while evaluating on it).
    """

    name: str
    sample: Callable
    loss: Callable
    metrics: Callable
    input_size: int
    output_size: int
    seq_len: int
    readout: str
    baselines: Mapping[str, float]
    solved: Callable
    test: Any = None
    validation: Any = None


def adding(seq_len: int, *, variant: str = "arjovsky") -> Task:
    """The adding problem: remember two marked values over ``seq_len`` steps and add them.

    Two input channels: values and markers. ``variant="arjovsky"`` (Le et al. 2015, Arjovsky
    et al. 2016): values ``U[0, 1]``, one marker in each half, target the sum of the two marked
    values; predicting the mean 1 gives MSE ``1/6`` (the ``"constant"`` baseline). ``variant=
    "hochreiter"`` (Hochreiter & Schmidhuber 1997): values ``U[-1, 1]``, the first marker in the
    first 10 steps, the second in the first half, target ``0.5 + (x_1 + x_2) / 4``; a
    sequence is correct when its error is below 0.04 (metric ``"accuracy"``); predicting 0.5
    gives MSE ``1/24``.

    The loss is the mean squared error of a scalar prediction from the last step. The task is
    ``solved`` when the MSE is below a tenth of the constant baseline.
    """
    if (not isinstance(seq_len, (int, np.integer)) or isinstance(seq_len, bool)
            or seq_len < (20 if variant == "hochreiter" else 2)):
        raise ValueError(f"seq_len must be an int >= 2 (>= 20 for 'hochreiter'); got {seq_len!r}")
    if variant not in ("arjovsky", "hochreiter"):
        raise ValueError(f"variant must be 'arjovsky' or 'hochreiter'; got {variant!r}")
    half = seq_len // 2

    def sample(key, batch_size):
        k_v, k_1, k_2 = jax.random.split(key, 3)
        if variant == "arjovsky":
            values = jax.random.uniform(k_v, (batch_size, seq_len))
            first = jax.random.randint(k_1, (batch_size,), 0, half)
            second = jax.random.randint(k_2, (batch_size,), half, seq_len)
        else:
            values = jax.random.uniform(k_v, (batch_size, seq_len), minval=-1.0, maxval=1.0)
            first = jax.random.randint(k_1, (batch_size,), 0, 10)
            # the second marker is anywhere else in the first half
            second = jax.random.randint(k_2, (batch_size,), 0, half - 1)
            second = second + (second >= first)
        steps = jnp.arange(seq_len)
        markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(values.dtype)
        total = jnp.sum(values * markers, axis=1)
        target = total if variant == "arjovsky" else 0.5 + total / 4.0
        return jnp.stack([values, markers], axis=-1), target[:, None]

    def loss(pred, target):
        return jnp.mean(jnp.square(pred - target))

    def metrics(pred, target):
        out = {"loss": loss(pred, target)}
        if variant == "hochreiter":
            out["accuracy"] = jnp.mean(jnp.abs(pred - target) < 0.04)
        return out

    constant = 1.0 / 6.0 if variant == "arjovsky" else 1.0 / 24.0

    def solved(m):
        return m["loss"] < 0.1 * constant

    return Task(f"adding(T={seq_len}, {variant})", sample, loss, metrics, 2, 1, seq_len, "last",
                {"constant": constant}, solved)




def _cross_entropy(logits, labels, mask=None):
    """Mean negative log-likelihood (nats) of integer ``labels`` under ``logits [..., V]``."""
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
    if mask is None:
        return jnp.mean(nll)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _accuracy(logits, labels, mask=None):
    hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
        return jnp.mean(hit)
    return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _check_int(value, name, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")


def copy(seq_len: int, *, selective: bool = False) -> Task:
    """The copy (memory) task of Arjovsky et al. 2016: recall 10 symbols after a long gap.

    Ten categories, one-hot inputs: 0 is blank, 1-8 are symbols, 9 is the delimiter. Inputs
    have ``seq_len + 20`` steps: 10 symbols drawn uniformly from 1-8, ``seq_len - 1`` blanks,
    the delimiter, 10 blanks. Targets are blank for ``seq_len + 10`` steps, then the 10
    symbols in order. The loss is the cross-entropy averaged over every step (readout
    ``"all"``). A memoryless model that outputs blanks and then guesses uniformly over the 8
    symbols scores ``10 log 8 / (seq_len + 20)`` (baseline ``"memoryless"``).

    ``selective=True`` (the selective copy of Gu & Dao 2023): the 10 symbols sit at random
    distinct positions among the ``seq_len + 9`` steps before the delimiter, blanks elsewhere,
    so the model must also pick them out of the noise; targets and baseline are unchanged.

    Metrics: ``"loss"`` and ``"recall_accuracy"`` (per-symbol accuracy over the 10 recall
    steps). ``solved`` when the recall accuracy exceeds 0.99.
    """
    _check_int(seq_len, "seq_len", 1)
    total, recall = seq_len + 20, 10

    def sample(key, batch_size):
        k_sym, k_pos = jax.random.split(key)
        symbols = jax.random.randint(k_sym, (batch_size, recall), 1, 9, jnp.int32)
        inputs = jnp.zeros((batch_size, total), jnp.int32)
        if selective:
            # sorted random distinct positions before the delimiter, one row at a time
            scores = jax.random.uniform(k_pos, (batch_size, total - recall - 1))
            positions = jnp.sort(jnp.argsort(scores, axis=1)[:, :recall], axis=1)
        else:
            positions = jnp.broadcast_to(jnp.arange(recall), (batch_size, recall))
        inputs = inputs.at[jnp.arange(batch_size)[:, None], positions].set(symbols)
        inputs = inputs.at[:, total - recall - 1].set(9)
        targets = jnp.zeros((batch_size, total), jnp.int32).at[:, -recall:].set(symbols)
        return jax.nn.one_hot(inputs, 10), targets

    def metrics(logits, targets):
        return {"loss": _cross_entropy(logits, targets),
                "recall_accuracy": _accuracy(logits[:, -recall:], targets[:, -recall:])}

    return Task(f"{'selective_' if selective else ''}copy(T={seq_len})", sample, _cross_entropy,
                metrics, 10, 10, total, "all",
                {"memoryless": recall * math.log(8) / total},
                lambda m: m["recall_accuracy"] > 0.99)


def digits(permuted: bool = False, pad: int = 0, *, test_fraction: float = 0.2,
           validation_fraction: float = 0.1, key: Any = None) -> Task:
    """Sequential (or permuted) digits: classify scikit-learn's bundled 8x8 digit images.

    The offline stand-in for pixel MNIST (Le et al. 2015; Arjovsky et al. 2016): each of the
    1797 images of ``sklearn.datasets.load_digits`` (values 0-16, scaled to [0, 1]) is read
    one pixel per step in row-major order, 64 steps of one feature; ``permuted=True`` applies
    one fixed random permutation of the 64 pixels to every image; ``pad`` blank (zero) steps
    follow the pixels, so the readout at the last step must carry the image ``pad`` steps
    further. Cross-entropy over 10 classes from the last step.

    The split is deterministic: ``key`` (default ``jax.random.key(0)``) fixes one shuffle of
    the images and the permutation; the first ``test_fraction`` of the shuffle is the test set
    (``Task.test``), the next ``validation_fraction`` the validation set
    (``Task.validation``), and training batches are drawn uniformly from the rest. Metrics:
    ``"loss"``, ``"accuracy"``; baselines: chance (``"chance_accuracy"`` 0.1,
    ``"chance_loss"`` log 10). ``solved`` when the accuracy exceeds 0.9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("digits() reads scikit-learn's bundled digits: pip install "
                          "scikit-learn (or pip install 'gatedrnn[data]')") from err
    _check_int(pad, "pad", 0)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    if not 0.0 < validation_fraction < 1.0 - test_fraction:
        raise ValueError(f"validation_fraction must be in (0, 1 - test_fraction = "
                         f"{1 - test_fraction:g}); got {validation_fraction!r}")
    images, labels = load_digits(return_X_y=True)
    k_split, k_perm = jax.random.split(jax.random.key(0) if key is None else key)
    order = np.asarray(jax.random.permutation(k_split, len(labels)))
    pixels = np.asarray(images, np.float32) / 16.0
    if permuted:
        pixels = pixels[:, np.asarray(jax.random.permutation(k_perm, 64))]
    xs = np.concatenate([pixels, np.zeros((len(labels), pad), np.float32)], axis=1)[..., None]
    n_test = int(round(test_fraction * len(labels)))
    n_val = n_test + int(round(validation_fraction * len(labels)))

    def part(idx):
        return jnp.asarray(xs[idx]), jnp.asarray(labels[idx], jnp.int32)

    test, validation = part(order[:n_test]), part(order[n_test:n_val])
    train_xs, train_ys = part(order[n_val:])

    def sample(key, batch_size):
        idx = jax.random.randint(key, (batch_size,), 0, train_xs.shape[0])
        return train_xs[idx], train_ys[idx]

    def metrics(logits, targets):
        return {"loss": _cross_entropy(logits, targets), "accuracy": _accuracy(logits, targets)}

    name = f"{'permuted_' if permuted else ''}digits(pad={pad})"
    return Task(name, sample, _cross_entropy, metrics, 1, 10, 64 + pad, "last",
                {"chance_accuracy": 0.1, "chance_loss": math.log(10)},
                lambda m: m["accuracy"] > 0.9, test, validation)


def _counting_sequences(ns, letters: int, length: int):
    """Inputs ``$ a^n b^n ...`` and next-token targets ``a^n b^n ... $`` for each n.

    Token 0 is ``$`` (start and end), 1.. are the letters. Steps past ``letters * n + 1`` are
    padding: zero input vectors and a zero ``mask``. Returns ``(xs [N, L, V], targets [N, L],
    mask [N, L], deterministic [N, L])``; ``deterministic`` marks steps whose next token
    follows from the prefix (every step after the first b has been read, and the first step).
    """
    ns = jnp.asarray(ns)[:, None]
    t = jnp.arange(length)[None, :]
    targets = jnp.where(t < letters * ns, t // jnp.maximum(ns, 1) + 1, 0)
    mask = (t <= letters * ns).astype(jnp.float32)
    inputs = jnp.where(t == 0, 0, jnp.roll(targets, 1, axis=1))
    xs = jax.nn.one_hot(inputs, letters + 1) * mask[..., None]
    deterministic = ((t == 0) | (t > ns)) & (t <= letters * ns)
    return xs, targets, mask, deterministic


def counting(max_n: int = 20, *, min_n: int = 1, letters: int = 2) -> Task:
    """Counting: next-token prediction on ``a^n b^n`` (``a^n b^n c^n`` for ``letters=3``).

    Weiss et al. 2018: a language model trained on positive examples only, ``n`` uniform in
    ``[min_n, max_n]``. Inputs are one-hot ``$ a^n b^n`` (token 0 is ``$``), padded to
    ``letters * max_n + 1`` steps with zero vectors; targets are the next tokens ``a^n b^n $``
    with a mask over the real steps. The loss is the masked cross-entropy (readout
    ``"all"``). While reading a's the next token is uncertain; from the first b on it is
    determined, and ``"accuracy"`` is the argmax accuracy on those determined steps. ``solved``
    when that accuracy is 1. Whether the trained model counts far beyond ``max_n`` is
    :func:`counting_accepts`.
    """
    _check_int(letters, "letters", 2)
    _check_int(min_n, "min_n", 1)
    _check_int(max_n, "max_n", min_n)
    length = letters * max_n + 1

    def sample(key, batch_size):
        ns = jax.random.randint(key, (batch_size,), min_n, max_n + 1)
        xs, targets, mask, deterministic = _counting_sequences(ns, letters, length)
        return xs, (targets, mask, deterministic.astype(jnp.float32))

    def loss(logits, targets):
        return _cross_entropy(logits, targets[0], targets[1])

    def metrics(logits, targets):
        return {"loss": loss(logits, targets),
                "accuracy": _accuracy(logits, targets[0], targets[2])}

    word = "".join(f"{c}^n" for c in "abc"[:letters])
    return Task(f"counting({word}, n<={max_n})", sample, loss, metrics, letters + 1,
                letters + 1, length, "all", {"chance_accuracy": 1.0 / (letters + 1)},
                lambda m: m["accuracy"] >= 1.0)


def counting_accepts(logits_fn: Callable, ns, *, letters: int = 2, threshold: float = 0.01):
    """Whether a trained counting model recognises ``a^n b^n`` for each ``n`` in ``ns``.

    Weiss et al. 2018 accept a string when the language model gives each of its next tokens
    probability above ``threshold`` (0.01) and the end ``$`` at its end. Here a model
    *recognises* ``a^n b^n`` when, along the string, every next token has probability above
    ``threshold`` and, at every step whose next token is determined (from the first b on),
    every other token is below it, so ``a^n b^m`` (m != n) and ``a^n b^n a`` are rejected.

    Args:
        logits_fn: ``xs [N, L, V] -> logits [N, L, V]`` (a causal model, e.g.
            ``lambda xs: model.apply(params, xs)``).
        ns: the ``n`` to test, e.g. ``[10, 100, 1000]``; one batch padded to the longest.
        letters: 2 for ``a^n b^n``, 3 for ``a^n b^n c^n``.
        threshold: the probability threshold.

    Returns:
        ``bool [N]``.
    """
    ns = np.asarray(ns)
    xs, targets, mask, deterministic = _counting_sequences(ns, letters,
                                                           letters * int(ns.max()) + 1)
    probs = jax.nn.softmax(logits_fn(xs), axis=-1)
    p_next = jnp.take_along_axis(probs, targets[..., None], -1)[..., 0]
    p_other = jnp.max(jnp.where(jax.nn.one_hot(targets, letters + 1) > 0, 0.0, probs), -1)
    likely = (p_next > threshold) | (mask == 0)
    exclusive = (p_other < threshold) | ~deterministic
    return jnp.all(likely & exclusive, axis=1)


def modular_sum(max_len: int = 40, *, min_len: int = 1, modulus: int = 5,
                signed: bool = False) -> Task:
    """State tracking: the sum of a token string modulo ``modulus``, read at its last token.

    The "modular arithmetic" task of Delétang et al. 2023 in the form of a running sum: a
    string of ``L`` tokens, ``L`` uniform in ``[min_len, max_len]``, each a digit ``d`` in
    ``[0, modulus)`` (with ``signed=True`` also ``-d``: tokens ``modulus + d``, so the
    string mixes additions and subtractions); the target is ``sum_t s_t d_t mod modulus``
    (``s_t`` the token's sign). Inputs are one-hot ``[B, max_len, V]`` (``V = modulus``, or
    ``2 * modulus`` signed) padded with zero vectors past ``L``; ``sample`` returns
    ``(xs, targets [B], lengths [B])``, so the model reads its prediction at step ``L - 1``
    (readout ``"last"``). Loss: cross-entropy; metric ``"accuracy"``; baseline
    ``"chance"`` ``1 / modulus``; ``solved`` when the accuracy is at least 0.99. A model is
    tested beyond its training lengths with another instance's ``sample``
    (``modular_sum(256, min_len=41)``). The running state is an element of the cyclic group
    ``Z_modulus``; :func:`parity` is the case ``modulus=2``.
    """
    _check_int(min_len, "min_len", 1)
    _check_int(max_len, "max_len", min_len)
    _check_int(modulus, "modulus", 2)
    vocab = 2 * modulus if signed else modulus

    def sample(key, batch_size):
        k_len, k_tok = jax.random.split(key)
        lengths = jax.random.randint(k_len, (batch_size,), min_len, max_len + 1)
        tokens = jax.random.randint(k_tok, (batch_size, max_len), 0, vocab)
        valid = jnp.arange(max_len) < lengths[:, None]
        digit = tokens % modulus
        value = jnp.where(tokens >= modulus, -digit, digit)
        targets = jnp.sum(jnp.where(valid, value, 0), axis=1) % modulus
        xs = jax.nn.one_hot(tokens, vocab) * valid[..., None]
        return xs, targets, lengths

    def metrics(logits, targets):
        return {"loss": _cross_entropy(logits, targets), "accuracy": _accuracy(logits, targets)}

    name = "parity" if modulus == 2 and not signed else (
        f"modular_sum(mod {modulus}{', signed' if signed else ''})")
    return Task(f"{name}(L={min_len}..{max_len})", sample, _cross_entropy, metrics, vocab,
                modulus, max_len, "last", {"chance": 1.0 / modulus},
                lambda m: m["accuracy"] >= 0.99)


def parity(max_len: int = 40, *, min_len: int = 1) -> Task:
    """State tracking: the parity of a bit string (Delétang et al. 2023; Grazzi et al. 2024),
    read at its last bit: :func:`modular_sum` with ``modulus=2``. Inputs one-hot bits
    ``[B, max_len, 2]``, targets ``[B]`` in ``{0, 1}``, lengths ``[B]`` uniform in
    ``[min_len, max_len]``."""
    return modular_sum(max_len, min_len=min_len, modulus=2)


_DEFAULT_CORPUS = ("argparse.py", "dataclasses.py", "functools.py", "fractions.py", "heapq.py",
                   "random.py", "string.py", "textwrap.py")


def _default_corpus() -> str:
    root = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in _DEFAULT_CORPUS:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def char_lm(path: str | os.PathLike | None = None, seq_len: int = 100, *,
            split: str = "blocks", block_size: int = 4096, test_fraction: float = 0.1,
            max_test_windows: int = 512) -> Task:
    """Character-level language modelling on a text file; metric bits per character.

    ``path=None`` reads a corpus every Python installation has offline: eight modules of the
    running interpreter's standard library (``argparse``, ``dataclasses``, ``functools``,
    ``fractions``, ``heapq``, ``random``, ``string``, ``textwrap``; about 310K characters), so
    numbers are comparable only between equal Python versions. The vocabulary is the sorted
    set of the text's characters (V of them); inputs are one-hot ``[B, T, V]``, targets the
    next character at every step (readout ``"all"``), loss the mean cross-entropy in nats.

    Held-out text, a ``test_fraction`` each for ``Task.test`` and ``Task.validation``:

    * ``split="blocks"`` (default): the text is cut into blocks of ``block_size``
      characters; with ``k = round(1 / test_fraction)``, block ``i`` is test text when
      ``i % k == k - 1`` and validation text when ``i % k == k // 2 - 1``, so both are spread
      over the whole corpus and are of the same kind as the training text (each module of
      the default corpus is in all three);
    * ``split="tail"``: the last ``test_fraction`` of the text is test text and the
      ``test_fraction`` before it validation text (text that follows the training text, as
      a forecast would see it).

    ``test`` and ``validation`` are up to ``max_test_windows`` non-overlapping windows each,
    inside held-out text and spread evenly over it. Training windows lie wholly inside
    training text. Metrics: ``"loss"``, ``"bits_per_char"``; baselines in bits per
    character: ``"uniform"`` (log2 V) and ``"unigram"`` (the entropy of the training text's
    character frequencies). ``solved`` when a model beats the unigram baseline.
    """
    _check_int(seq_len, "seq_len", 1)
    if not 0.0 < test_fraction < 0.5:
        raise ValueError(f"test_fraction must be in (0, 0.5) (as much again is held out for "
                         f"validation); got {test_fraction!r}")
    _check_int(max_test_windows, "max_test_windows", 1)
    if split not in ("blocks", "tail"):
        raise ValueError(f"split must be 'blocks' or 'tail'; got {split!r}")
    if split == "blocks":
        _check_int(block_size, "block_size", seq_len + 2)
    if path is None:
        text, name = _default_corpus(), "stdlib"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text, name = f.read(), os.path.basename(os.fspath(path))
        except UnicodeDecodeError as error:
            raise ValueError(f"path {os.fspath(path)!r} is not UTF-8 text ({error}); char_lm "
                             "reads text files") from None
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    codes = np.fromiter((lookup[c] for c in text), np.int32, len(text))
    role = _held_out_roles(len(codes), split, block_size, test_fraction)  # 0 train, 1 val, 2 test
    v = len(vocab)

    def windows(which):
        starts = _window_starts(role == which, seq_len + 1, stride=seq_len + 1)
        if starts.size == 0:
            raise ValueError(f"the text ({len(codes)} characters) is too short for seq_len="
                             f"{seq_len} with split={split!r}, block_size={block_size} and "
                             f"test_fraction={test_fraction}: no held-out window fits")
        starts = starts[np.linspace(0, starts.size - 1, min(starts.size, max_test_windows))
                        .round().astype(int)]
        window = codes[starts[:, None] + np.arange(seq_len + 1)]
        return jax.nn.one_hot(window[:, :-1], v), jnp.asarray(window[:, 1:])

    train = role == 0
    train_starts = _window_starts(train, seq_len + 1, stride=1)
    if train_starts.size == 0:
        raise ValueError(f"the text ({len(codes)} characters) is too short for seq_len="
                         f"{seq_len}: no training window fits")
    test, validation = windows(2), windows(1)
    train_codes = codes[train]
    freq = np.bincount(train_codes, minlength=v) / len(train_codes)
    unigram = float(-np.sum(freq[freq > 0] * np.log2(freq[freq > 0])))
    codes_dev, starts_dev = jnp.asarray(codes), jnp.asarray(train_starts)

    def sample(key, batch_size):
        start = starts_dev[jax.random.randint(key, (batch_size, 1), 0, starts_dev.size)]
        window = codes_dev[start + jnp.arange(seq_len + 1)]
        return jax.nn.one_hot(window[:, :-1], v), window[:, 1:]

    def metrics(logits, targets):
        nats = _cross_entropy(logits, targets)
        return {"loss": nats, "bits_per_char": nats / math.log(2)}

    return Task(f"char_lm({name}, T={seq_len}, {split})", sample, _cross_entropy, metrics, v,
                v, seq_len, "all", {"uniform": math.log2(v), "unigram": unigram},
                lambda m: m["bits_per_char"] < unigram, test, validation)


def _held_out_roles(n: int, split: str, block_size: int, fraction: float) -> np.ndarray:
    """``[n]`` each character's part: 0 training, 1 validation, 2 test (see char_lm)."""
    if split == "tail":
        cut = int(n * fraction)
        return np.repeat(np.int8([0, 1, 2]), [n - 2 * cut, cut, cut])
    k = max(round(1 / fraction), 2)
    block = (np.arange(n) // block_size) % k
    return np.where(block == k - 1, 2, np.where(block == k // 2 - 1, 1, 0)).astype(np.int8)


def _window_starts(inside: np.ndarray, width: int, stride: int) -> np.ndarray:
    """Starts of the windows of ``width`` characters lying wholly where ``inside`` is true,
    every ``stride``-th from the start of each run of true characters."""
    edges = np.flatnonzero(np.diff(np.r_[0, inside.astype(np.int8), 0]))
    runs = edges.reshape(-1, 2)  # [start, end) of each run
    return np.concatenate([np.arange(a, b - width + 1, stride) for a, b in runs]
                          or [np.zeros(0, int)]).astype(np.int64)


_SERIES = {"co2": ("co2", "co2"), "sunspots": ("sunspots", "SUNACTIVITY"),
           "nile": ("nile", "volume")}


def _load_series(name: str) -> np.ndarray:
    if name not in _SERIES:
        raise ValueError(f"series name must be one of {sorted(_SERIES)} or a 1-D array of "
                         f"values; got {name!r}")
    try:
        import statsmodels.datasets as datasets
    except ImportError as err:
        raise ImportError(f"series({name!r}) reads the data bundled with statsmodels: pip "
                          "install statsmodels (or pip install 'gatedrnn[data]'), or pass "
                          "your own 1-D array of values") from err
    module, column = _SERIES[name]
    values = np.array(getattr(datasets, module).load_pandas().data[column], np.float64)
    missing = np.isnan(values)
    if missing.any():  # co2 has 59 missing weeks: interpolate linearly between neighbours
        steps = np.arange(len(values))
        values[missing] = np.interp(steps[missing], steps[~missing], values[~missing])
    return values


def series(name: Any = "co2", seq_len: int = 52, *, test_fraction: float = 0.2) -> Task:
    """One-step-ahead forecasting of a real series (statsmodels' bundled data, offline).

    ``name`` is ``"co2"`` (Mauna Loa weekly CO2, 2284 values, 59 missing ones interpolated
    linearly), ``"sunspots"`` (309 yearly values) or ``"nile"`` (100 yearly flows), read from
    statsmodels; or a 1-D array of your own values. The series is standardised with the
    training part's mean and standard deviation; the last ``test_fraction`` is held out.

    Inputs are windows of ``seq_len`` values ``[B, T, 1]``; targets are the next value at
    every step ``[B, T, 1]`` (readout ``"all"``), loss the mean squared error in standardised
    units. ``Task.test`` is every window inside the held-out part. Baselines on the test
    windows: ``"persistence"`` (predict the current value) and ``"mean"`` (predict the training
    mean). ``solved`` when a model beats persistence.
    """
    _check_int(seq_len, "seq_len", 1)
    if isinstance(name, str):
        values, label = _load_series(name), name
    else:
        values, label = np.asarray(name, np.float64), "values"
        if values.ndim != 1:
            raise ValueError(f"series values must be 1-D; got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"series values must be finite; got {np.sum(~np.isfinite(values))} "
                             "NaN or infinite values (interpolate the gaps first)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    split = int(len(values) * (1.0 - test_fraction))
    train, held_out = values[:split], values[split:]
    if len(train) < seq_len + 2 or len(held_out) < seq_len + 1:
        raise ValueError(f"series {label!r} ({len(values)} values) is too short for seq_len="
                         f"{seq_len} with test_fraction={test_fraction}: both parts need "
                         f"seq_len + 1 values")
    mean, std = train.mean(), train.std()
    if not std > 0:
        raise ValueError(f"series {label!r} is constant over its training part (standard "
                         "deviation 0): there is nothing to forecast")
    train = jnp.asarray((train - mean) / std, jnp.float32)
    held_out = ((held_out - mean) / std).astype(np.float32)
    windows = held_out[np.arange(len(held_out) - seq_len)[:, None] + np.arange(seq_len + 1)]
    test = (jnp.asarray(windows[:, :-1, None]), jnp.asarray(windows[:, 1:, None]))
    persistence = float(np.mean(np.square(windows[:, 1:] - windows[:, :-1])))
    mean_mse = float(np.mean(np.square(windows[:, 1:])))

    def sample(key, batch_size):
        start = jax.random.randint(key, (batch_size, 1), 0, train.shape[0] - seq_len)
        window = train[start + jnp.arange(seq_len + 1)]
        return window[:, :-1, None], window[:, 1:, None]

    def loss(pred, target):
        return jnp.mean(jnp.square(pred - target))

    return Task(f"series({label}, T={seq_len})", sample, loss, lambda p, t: {"loss": loss(p, t)},
                1, 1, seq_len, "all", {"persistence": persistence, "mean": mean_mse},
                lambda m: m["loss"] < persistence, test)


__all__ = ["Task", "adding", "char_lm", "copy", "counting", "counting_accepts", "digits",
           "modular_sum", "parity", "series"]
