"""The tasks: structure against direct re-derivations, baselines, splits and acceptance."""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gatedrnn as gr


@pytest.mark.parametrize("selective", [False, True])
def test_copy_task_layout_targets_and_memoryless_baseline(selective):
    seq_len = 15
    task = gr.tasks.copy(seq_len, selective=selective)
    xs, targets = task.sample(jax.random.key(0), 64)
    assert xs.shape == (64, seq_len + 20, 10) and targets.shape == (64, seq_len + 20)
    tokens = np.asarray(xs.argmax(-1))
    np.testing.assert_array_equal(np.asarray(xs).sum(-1), 1.0)  # one-hot
    np.testing.assert_array_equal(tokens[:, seq_len + 9], 9)     # the delimiter
    np.testing.assert_array_equal(tokens[:, seq_len + 10:], 0)
    targets = np.asarray(targets)
    np.testing.assert_array_equal(targets[:, :seq_len + 10], 0)
    symbols = targets[:, -10:]
    assert symbols.min() >= 1 and symbols.max() <= 8
    before = tokens[:, :seq_len + 9]
    for row, syms in zip(before, symbols):
        np.testing.assert_array_equal(row[row > 0], syms)  # the symbols, in order
    if not selective:
        np.testing.assert_array_equal(before[:, :10], symbols)
    else:
        assert (before[:, :10] == 0).any()
    # the memoryless strategy: certain blanks, then uniform over the 8 symbols
    memoryless = np.full(xs.shape, -1e9, np.float32)
    memoryless[:, :seq_len + 10, 0] = 0.0
    memoryless[:, seq_len + 10:, 1:9] = 0.0
    loss = float(task.loss(jnp.asarray(memoryless), targets))
    assert loss == pytest.approx(10 * math.log(8) / (seq_len + 20), rel=1e-5)
    assert task.baselines["memoryless"] == pytest.approx(loss, rel=1e-5)


def test_digits_split_is_deterministic_disjoint_and_permutation_is_fixed():
    from sklearn.datasets import load_digits
    images, labels = load_digits(return_X_y=True)
    a, b = gr.tasks.digits(), gr.tasks.digits()
    jax.tree.map(np.testing.assert_array_equal, a.test, b.test)
    jax.tree.map(np.testing.assert_array_equal, a.sample(jax.random.key(1), 32),
                 b.sample(jax.random.key(1), 32))
    test_xs, test_ys = (np.asarray(v) for v in a.test)
    assert test_xs.shape == (359, 64, 1)
    # every test image is a digits image with its own label, and none is drawn for training
    rows = {tuple(r): y for r, y in zip((images / 16).astype(np.float32), labels)}
    assert all(rows[tuple(x[:, 0])] == y for x, y in zip(test_xs, test_ys))
    val_xs, val_ys = (np.asarray(v) for v in a.validation)
    assert val_xs.shape == (180, 64, 1)
    assert all(rows[tuple(x[:, 0])] == y for x, y in zip(val_xs, val_ys))
    train_xs, _ = a.sample(jax.random.key(2), 2000)
    held_out = {tuple(x[:, 0]) for x in np.concatenate([test_xs, val_xs])}
    overlap = sum(tuple(x[:, 0]) in held_out for x in np.asarray(train_xs))
    duplicates = sum(tuple(x) in held_out for x in (images / 16).astype(np.float32)) - 539
    assert overlap <= duplicates * 10  # only images that occur twice in the data set
    assert len({tuple(x[:, 0]) for x in test_xs} & {tuple(x[:, 0]) for x in val_xs}) \
        <= duplicates
    permuted = gr.tasks.digits(permuted=True, pad=5)
    p_xs, p_ys = (np.asarray(v) for v in permuted.test)
    np.testing.assert_array_equal(p_ys, test_ys)
    assert p_xs.shape == (359, 69, 1) and not p_xs[:, 64:].any()
    perm = [np.flatnonzero((test_xs[:, :, 0] == p_xs[:, j:j + 1, 0]).all(0))[0]
            for j in range(64) if np.unique(p_xs[:, j]).size > 2]
    assert len(set(perm)) == len(perm)  # one fixed permutation maps every image
    assert sorted(np.sort(p_xs[:, :64], 1).ravel()) == sorted(np.sort(test_xs, 1).ravel())
    assert a.input_size == 1 and a.output_size == 10 and a.seq_len == 64


def _counting_oracle(letters):
    """An exact a^n b^n counter written with NumPy loops over the one-hot inputs."""
    def logits_fn(xs):
        xs = np.asarray(xs)
        out = np.full(xs.shape, -30.0, np.float32)
        for i, seq in enumerate(xs):
            counts = np.zeros(letters + 1, int)
            for t, x in enumerate(seq):
                if not x.any():
                    break
                token = int(x.argmax())
                counts[token] += 1
                n = counts[1]
                if token == 1:                 # still reading a's: a or b may follow
                    out[i, t, [1, 2]] = 0.0
                elif token == 0:               # the start: an a follows
                    out[i, t, 1] = 0.0
                else:
                    nxt = token + 1 if counts[token] == n else token
                    out[i, t, 0 if nxt > letters else nxt] = 0.0
        return jnp.asarray(out)
    return logits_fn


@pytest.mark.parametrize("letters", [2, 3])
def test_counting_sequences_and_acceptance_against_an_exact_counter(letters):
    task = gr.tasks.counting(6, letters=letters)
    xs, (targets, mask, det) = task.sample(jax.random.key(0), 50)
    assert xs.shape == (50, letters * 6 + 1, letters + 1)
    for x, y, m in zip(np.asarray(xs), np.asarray(targets), np.asarray(mask)):
        n = int(x[:, 1].sum())
        word = [0] + sum(([k] * n for k in range(1, letters + 1)), []) + [0]
        np.testing.assert_array_equal(x[:len(word) - 1].argmax(-1), word[:-1])
        np.testing.assert_array_equal(y[:len(word) - 1], word[1:])
        assert m.sum() == len(word) - 1 and not x[len(word) - 1:].any()
    oracle = _counting_oracle(letters)
    metrics = task.metrics(oracle(xs), (targets, mask, det))
    assert float(metrics["accuracy"]) == 1.0 and bool(task.solved(metrics))
    ns = [1, 7, 40]
    assert gr.tasks.counting_accepts(oracle, ns, letters=letters).tolist() == [True] * 3
    uniform = lambda xs: jnp.zeros(xs.shape)  # noqa: E731
    assert not gr.tasks.counting_accepts(uniform, ns, letters=letters).any()

    def forgets_after_20(xs):  # a counter that ends every word after 20 b's at the latest
        logits = np.array(oracle(xs))
        b_seen = np.cumsum(np.asarray(xs)[..., 2], axis=1)
        logits[b_seen >= 20] = [0.0] + [-30.0] * letters
        return jnp.asarray(logits)
    accepted = gr.tasks.counting_accepts(forgets_after_20, [5, 40], letters=letters)
    assert accepted.tolist() == [True, False]


def test_char_lm_windows_vocabulary_baselines_and_default_corpus(tmp_path):
    text = "abracadabra, the cat sat on the mat. " * 40
    path = tmp_path / "text.txt"
    path.write_text(text)
    task = gr.tasks.char_lm(path, seq_len=12, split="tail", test_fraction=0.25)
    vocab = sorted(set(text))
    assert task.input_size == task.output_size == len(vocab)
    xs, targets = task.sample(jax.random.key(0), 16)
    inputs = np.asarray(xs.argmax(-1))
    np.testing.assert_array_equal(inputs[:, 1:], np.asarray(targets)[:, :-1])  # next chars
    cut = int(len(text) * 0.25)
    train_text = text[:len(text) - 2 * cut]
    for row in inputs:
        assert "".join(vocab[i] for i in row) in train_text
    counts = np.array([train_text.count(c) for c in vocab]) / len(train_text)
    assert task.baselines["unigram"] == pytest.approx(-(counts * np.log2(counts)).sum())
    assert task.baselines["uniform"] == pytest.approx(math.log2(len(vocab)))
    for (held_in, held_out), part in ((task.test, text[len(text) - cut:]),
                                      (task.validation, text[len(text) - 2 * cut:-cut])):
        assert "".join(vocab[i] for i in np.asarray(held_in[0].argmax(-1))) == part[:12]
        assert "".join(vocab[i] for i in np.asarray(held_out[0])) == part[1:13]
    metrics = task.metrics(jnp.zeros((2, 12, len(vocab))), task.test[1][:2])
    assert float(metrics["bits_per_char"]) == pytest.approx(math.log2(len(vocab)), rel=1e-6)
    default = gr.tasks.char_lm(seq_len=50)
    assert default.input_size > 60 and default.test[0].shape[1:] == (50, default.input_size)
    assert 3.0 < default.baselines["unigram"] < default.baselines["uniform"]


def test_char_lm_blocks_hold_out_test_and_validation_text_spread_over_the_corpus(tmp_path):
    rng = np.random.default_rng(0)
    # every character's position is recoverable: a window's text is found at one place only
    text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 20_000))
    path = tmp_path / "text.txt"
    path.write_text(text)
    block, seq_len = 500, 16
    task = gr.tasks.char_lm(path, seq_len=seq_len, block_size=block, test_fraction=0.1)
    vocab = sorted(set(text))

    def decode(onehot):
        return "".join(vocab[i] for i in np.asarray(onehot.argmax(-1)))

    def blocks_of(windows):
        found = set()
        for w in windows:
            start = text.index(decode(w))
            assert start // block == (start + seq_len) // block  # inside one block
            found.add(start // block)
        return found

    test, validation = blocks_of(task.test[0]), blocks_of(task.validation[0])
    assert test == {b for b in range(40) if b % 10 == 9}  # every tenth, spread evenly
    assert validation == {b for b in range(40) if b % 10 == 4}
    xs, ys = task.sample(jax.random.key(1), 128)
    for w, y in zip(xs, ys):  # training windows never touch held-out text
        start = text.index(decode(w) + vocab[int(y[-1])])
        assert {start // block, (start + seq_len) // block}.isdisjoint(test | validation)
    train = "".join(text[b * block:(b + 1) * block] for b in range(40)
                    if b % 10 not in (4, 9))
    counts = np.array([train.count(c) for c in vocab]) / len(train)
    assert task.baselines["unigram"] == pytest.approx(-(counts * np.log2(counts)).sum())


@pytest.mark.parametrize("modulus, signed", [(2, False), (5, False), (5, True)])
def test_modular_sum_labels_equal_a_brute_force_sum_of_the_tokens(modulus, signed):
    task = (gr.tasks.parity(12, min_len=3) if modulus == 2 else
            gr.tasks.modular_sum(12, min_len=3, modulus=modulus, signed=signed))
    vocab = 2 * modulus if signed else modulus
    assert (task.input_size, task.output_size, task.readout) == (vocab, modulus, "last")
    xs, targets, lengths = task.sample(jax.random.key(modulus + signed), 300)
    xs, targets, lengths = map(np.asarray, (xs, targets, lengths))
    assert xs.shape == (300, 12, vocab) and lengths.min() == 3 and lengths.max() == 12
    for x, target, length in zip(xs, targets, lengths):
        assert np.all(x[length:] == 0) and np.all(x[:length].sum(-1) == 1)
        total = 0
        for token in x[:length].argmax(-1):
            total += -(token - modulus) if token >= modulus else token
        assert target == total % modulus
    assert abs(np.mean(targets == 0) - 1 / modulus) < 0.1
    chance = task.metrics(jnp.zeros((300, modulus)), targets)
    assert float(chance["loss"]) == pytest.approx(math.log(modulus), rel=1e-6)


def test_series_windows_standardisation_and_baselines():
    values = np.sin(np.arange(200) / 5.0) * 3 + 10
    task = gr.tasks.series(values, seq_len=16, test_fraction=0.25)
    train = values[:150]
    z = (values - train.mean()) / train.std()
    xs, ys = task.sample(jax.random.key(0), 8)
    np.testing.assert_allclose(np.asarray(xs)[:, 1:], np.asarray(ys)[:, :-1])
    start = int(np.argmin(np.abs(z[:150 - 16] - float(xs[0, 0, 0])) +
                          np.abs(z[1:151 - 16] - float(xs[0, 1, 0]))))
    np.testing.assert_allclose(xs[0, :, 0], z[start:start + 16], atol=1e-5)
    test_xs, test_ys = task.test
    assert test_xs.shape == (50 - 16, 16, 1)
    np.testing.assert_allclose(test_xs[0, :, 0], z[150:166], atol=1e-5)
    persistence = np.mean([(z[150 + i + 1:150 + i + 17] - z[150 + i:150 + i + 16]) ** 2
                           for i in range(34)])
    assert task.baselines["persistence"] == pytest.approx(persistence, rel=1e-4)
    assert float(task.loss(test_xs, test_ys)) == pytest.approx(persistence, rel=1e-4)


def test_series_reads_statsmodels_data_and_says_how_to_install_it(monkeypatch):
    pytest.importorskip("statsmodels")
    co2 = gr.tasks.series("co2")
    assert np.isfinite(np.asarray(co2.test[0])).all()
    assert co2.baselines["persistence"] < co2.baselines["mean"]
    assert gr.tasks.series("sunspots", 20).test[0].shape == (42, 20, 1)
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
    with pytest.raises(ImportError, match="pip install statsmodels"):
        gr.tasks.series("co2")


@pytest.mark.parametrize("make, match", [
    (lambda: gr.tasks.copy(0), "seq_len must be an int >= 1; got 0"),
    (lambda: gr.tasks.digits(pad=-1), "pad must be an int >= 0; got -1"),
    (lambda: gr.tasks.counting(3, min_n=5), "max_n must be an int >= 5; got 3"),
    (lambda: gr.tasks.series("gdp"), "series name must be one of"),
    (lambda: gr.tasks.series(np.zeros(30), seq_len=10), "too short for seq_len=10"),
])
def test_bad_task_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
