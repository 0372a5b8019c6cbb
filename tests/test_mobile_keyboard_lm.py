"""Language models: LSTM shapes and training, Kneser-Ney, cached decoding, int8 and ONNX, data."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cases.mobile_keyboard.baseline import KeyboardKneserNey
from cases.mobile_keyboard.data import KeyboardTextGenerator, builtin_corpus, load_corpus
from cases.mobile_keyboard.model import (
    KeyboardLSTM,
    KeyboardTrigram,
    KeyboardVocab,
    export_step_onnx,
    int8_package,
    lstm_from_int8,
    mix_logp,
)
from shared.errors import CasebookError, DataError


@pytest.fixture(scope="module")
def corpus():
    return builtin_corpus(400, seed=1)


@pytest.fixture(scope="module")
def vocab(corpus):
    return KeyboardVocab.build(corpus.train, 200)


def test_lstm_shapes_and_tied_weights():
    m = KeyboardLSTM(50, 8, 16, num_layers=2)
    logits, (h, c) = m(torch.randint(0, 50, (3, 7)))
    assert logits.shape == (3, 7, 50)
    assert h.shape == c.shape == (2, 3, 16)
    step_logits, _ = m.step(torch.tensor([1, 2, 3]), (h, c))
    assert step_logits.shape == (3, 50)
    assert m.head.weight is m.embed.weight  # tied
    assert "head.weight" not in m.state_tensors()


@pytest.fixture()
def one_thread():
    # Tiny models: a second torch thread only spins (and crawls when the machine is busy).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_lstm_overfits_one_batch(one_thread):
    torch.manual_seed(0)
    m = KeyboardLSTM(30, 16, 32)
    x = torch.randint(2, 30, (4, 12))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = m(x)
        loss = F.cross_entropy(logits.reshape(-1, 30), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3


def test_sampled_softmax_masks_accidental_hits_and_trains_the_full_softmax(one_thread):
    from cases.mobile_keyboard.train import sampled_softmax_loss

    torch.manual_seed(0)
    m = KeyboardLSTM(40, 16, 32)
    q = torch.zeros(40)
    q[5] = 1.0  # every sample is word 5: with target 5 all negatives are accidental hits
    z = m.features(torch.randint(2, 40, (2, 3))).reshape(-1, 16)  # (6, E)
    loss = sampled_softmax_loss(m, z, torch.full((6,), 5), q.log(), q, 8)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)  # only the true word is left

    # Trained with the sampled loss only, the full-softmax loss on the batch falls too.
    x = torch.randint(2, 40, (4, 12))
    y = torch.roll(x, -1, dims=1)
    q = torch.full((40,), 1 / 40)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)

    @torch.no_grad()
    def full_loss():
        return float(F.cross_entropy(m(x)[0].reshape(-1, 40), y.reshape(-1)))

    before = full_loss()
    for _ in range(300):
        z = m.features(x).reshape(-1, 16)
        loss = sampled_softmax_loss(m, z, y.reshape(-1), q.log(), q, 39)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert full_loss() < 0.3 < before


def test_training_windows_start_at_message_starts():
    from cases.mobile_keyboard.train import make_batches, window_starts

    # <s> = 1 at 0, 4, 7 and 16; the message at 7 is longer than a window (5 tokens).
    s = np.array([1, 5, 6, 7, 1, 8, 9, 1, 3, 4, 5, 6, 7, 8, 9, 2, 1, 4])
    starts = window_starts(s, 5, bos=1)
    np.testing.assert_array_equal(starts, [0, 4, 7, 12])  # 12: the long message continues
    x, y = next(make_batches(s, 5, 8, np.random.default_rng(0), starts))
    assert x.shape == y.shape == (4, 5)
    assert sorted(x[:, 0].tolist()) == [1, 1, 1, 7]
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # targets are the next tokens


def test_train_lm_with_sampling_averaging_and_the_full_softmax_epoch(corpus, vocab, one_thread):
    from cases.mobile_keyboard.config import get_config
    from cases.mobile_keyboard.train import evaluate_lm, token_stream, train_lm

    cfg = get_config(
        "tiny", epochs=3, softmax_samples=50, ema_decay=0.9, lr=1e-2, max_train_minutes=1.0
    )
    model, info = train_lm(cfg, corpus, vocab, seed=0, log=lambda _: None)
    names = [h["epoch"] for h in info["history"]]
    assert names[-1] == "full-softmax" and len(names) >= 2
    assert model.head.weight is model.embed.weight  # still tied after loading the best state
    # The kept weights are the best validated ones (averaged or full-softmax), and they are
    # what the model holds now.
    val = token_stream(corpus.val, vocab)[:50_000]
    assert evaluate_lm(model, val)[0] == pytest.approx(info["best_val_nll"], rel=1e-5)
    assert info["best_val_top1"] == max(h["val_top1"] for h in info["history"])


def test_train_lm_selects_on_validation_top1_or_loss(corpus, vocab, one_thread):
    from cases.mobile_keyboard.config import get_config
    from cases.mobile_keyboard.train import evaluate_lm, token_stream, train_lm

    val = token_stream(corpus.val, vocab)[:50_000]
    for select_on in ("top1", "nll"):
        cfg = get_config("tiny", epochs=4, patience=4, lr=2e-2, select_on=select_on)
        model, info = train_lm(cfg, corpus, vocab, seed=0, log=lambda _: None)
        hist = info["history"]
        key, pick = ("val_top1", max) if select_on == "top1" else ("val_nll", min)
        assert info[f"best_{key}"] == pick(h[key] for h in hist)
        nll, top1 = evaluate_lm(model, val)  # the model holds the selected weights
        assert nll == pytest.approx(info["best_val_nll"], rel=1e-5)
        assert top1 == pytest.approx(info["best_val_top1"])
        assert 0 < top1 < 1
    with pytest.raises(CasebookError):
        train_lm(get_config("tiny", select_on="ppl"), corpus, vocab, log=lambda _: None)


def test_next_word_hits_and_message_positions():
    from cases.mobile_keyboard.scoring import message_positions, next_word_hits

    vocab = KeyboardVocab(["<unk>", "<s>", "a", "b", "c"])

    class Fixed:  # always ranks c > b > a
        def batch_logp(self, positions):
            return np.tile(np.log([0.3, 0.3, 0.1, 0.2, 0.4]), (len(positions), 1))

    ids = np.array([1, 4, 3, 1, 2, 0])  # <s> c b <s> a <unk>
    words, pos = ["c", "b", "a", "zzz"], np.array([1, 2, 4, 5])
    hit1, hit3 = next_word_hits(Fixed(), vocab, words, pos)
    # <unk> and <s> are never suggested, so the top 3 are c, b, a; an unknown word is a miss
    assert hit1.tolist() == [True, False, False, False]
    assert hit3.tolist() == [True, True, True, False]
    assert message_positions(ids, pos).tolist() == [0, 1, 0, 1]


def test_cached_step_decoding_equals_full_recompute():
    torch.manual_seed(0)
    m = KeyboardLSTM(40, 8, 16).eval()
    tokens = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        full, _ = m(tokens)  # (2, 9, 40)
        state, steps = None, []
        for t in range(tokens.shape[1]):
            logits, state = m.step(tokens[:, t], state)  # one keystroke's word at a time
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    # The LSTMCell inference path gives the same numbers.
    with torch.no_grad():
        state = None
        for t in range(tokens.shape[1]):
            fast, state = m.fast_step(tokens[:, t], state)
            assert torch.allclose(fast, steps[t], atol=1e-5)


def test_kneser_ney_sums_to_one(corpus, vocab):
    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    contexts = [[], [vocab.stoi["the"]], [vocab.stoi["do"], vocab.stoi["you"]], [0, 0], [5, 9]]
    for ctx in contexts:
        p = kn.prob_next(ctx)
        assert p.shape == (len(vocab),)
        assert np.all(p > 0)
        assert p.sum() == pytest.approx(1.0, abs=1e-6)  # float32 tables
    # The model learned something: after "do you", "want" is the likeliest word.
    p = kn.prob_next([vocab.stoi["do"], vocab.stoi["you"]])
    assert vocab.itos[int(np.argmax(p))] == "want"


def test_kn_scorer_starts_each_message_afresh(corpus, vocab):
    from cases.mobile_keyboard.predictor import KeyboardNextWord
    from cases.mobile_keyboard.scoring import KNScorer, next_word_step_fn

    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    a, b, c = (vocab.stoi[w] for w in vocab.itos[2:5])
    bos = vocab.stoi["<s>"]
    ids = np.array([bos, a, b, bos, c, a])
    scorer = KNScorer(kn, ids)
    # At the second message's first word the previous message's `b` is not context.
    np.testing.assert_allclose(scorer.logp_before(4), kn.logprob_next([]))
    np.testing.assert_allclose(scorer.batch_logp(np.array([5]))[0], kn.logprob_next([c]))
    # The phone's step function agrees word by word.
    step = next_word_step_fn(KeyboardNextWord(trigram=kn.full_))
    for i, tok in enumerate(ids[:-1]):
        np.testing.assert_allclose(step(int(tok)), scorer.logp_before(i + 1))


def test_vocab_prefix_index(vocab):
    ids = vocab.prefix_ids("th")
    words = [vocab.itos[i] for i in ids]
    assert words and all(w.startswith("th") for w in words)
    assert set(words) == {w for w in vocab.itos[2:] if w.startswith("th")}
    assert len(vocab.prefix_ids("zzzz")) == 0
    lp = np.zeros(len(vocab))
    lp[vocab.stoi["the"]] = 5.0
    assert vocab.top_words(lp, "t", 3)[0] == "the"
    assert KeyboardVocab.from_json(vocab.to_json()).itos == vocab.itos


def test_int8_package_is_what_runs_and_stays_close():
    torch.manual_seed(0)
    m = KeyboardLSTM(300, 32, 64).eval()
    pkg = int8_package(m)
    # int8 rows + a scale per row: about a quarter of the fp32 size.
    assert len(pkg) < 0.35 * 4 * m.n_params()
    q = lstm_from_int8(pkg, 32, 64)
    w, wq = m.embed.weight.detach(), q.embed.weight.detach()
    assert not torch.equal(w, wq)  # really rounded ...
    assert (
        float((w - wq).abs().max()) <= float(w.abs().max()) / 127 / 2 + 1e-7
    )  # ... to half a step
    assert q.head.weight is q.embed.weight  # still tied
    x = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        a = torch.log_softmax(m(x)[0], -1)
        b = torch.log_softmax(q(x)[0], -1)
    assert float((a - b).abs().max()) < 0.05


def test_pruned_trigram_fits_the_budget_and_still_sums_to_one(corpus, vocab):
    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    full = kn.full_
    budget = full.n_bytes() // 2
    pruned, (k3, k2) = kn.prune_to(budget)
    assert pruned.n_bytes() <= budget < full.n_bytes() and k3 >= 2
    assert pruned.n_entries() < full.n_entries()
    # Round trip through the bytes that ship, then every context still sums to one.
    pruned = KeyboardTrigram.from_bytes(pruned.to_bytes())
    for ctx in ([], [vocab.stoi["do"], vocab.stoi["you"]], [5, 9], [vocab.stoi["the"]]):
        p = pruned.prob_next(ctx)
        assert np.all(p > 0) and p.sum() == pytest.approx(1.0, abs=1e-6)
    # Frequent trigrams survive the cut-off: "do you" -> "want" still wins.
    p = pruned.prob_next([vocab.stoi["do"], vocab.stoi["you"]])
    assert vocab.itos[int(np.argmax(p))] == "want"
    with pytest.raises(ValueError):
        kn.prune_to(100)  # smaller than the unigram table


def test_mixture_probabilities_sum_to_one(corpus, vocab):
    from cases.mobile_keyboard.predictor import KeyboardNextWord
    from cases.mobile_keyboard.scoring import NextWordScorer, next_word_step_fn, test_stream

    torch.manual_seed(0)
    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    nw = KeyboardNextWord(KeyboardLSTM(len(vocab), 8, 16), kn.full_, mix_weight=0.3)
    ids, _, pos = test_stream(corpus.test[:5], vocab, 10**6)
    lp = NextWordScorer(nw, ids).batch_logp(pos)  # (n, V)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, atol=1e-5)
    a = np.log(np.full(4, 0.25))
    b = np.log(np.array([0.7, 0.1, 0.1, 0.1]))
    np.testing.assert_allclose(np.exp(mix_logp(a, b, 0.5)), [0.475, 0.175, 0.175, 0.175])
    assert mix_logp(a, b, 0.0) is a and mix_logp(a, b, 1.0) is b
    # No skew: the predictor's step, fed the stream word by word, gives the batched numbers.
    step = next_word_step_fn(nw)
    for i, tok in enumerate(ids[:-1]):
        got = step(int(tok))
        if i + 1 in set(pos.tolist()):
            np.testing.assert_allclose(got, lp[pos.tolist().index(i + 1)], atol=1e-5)


def test_onnx_step_parity(tmp_path):
    torch.manual_seed(0)
    m = KeyboardLSTM(60, 8, 16).eval()
    path, diff = export_step_onnx(m, tmp_path / "step.onnx")
    assert path.is_file() and diff < 1e-4


def test_generator_is_deterministic_and_zipfian():
    a = KeyboardTextGenerator(3).messages(50)
    assert a == KeyboardTextGenerator(3).messages(50)
    assert a != KeyboardTextGenerator(4).messages(50)
    c = builtin_corpus(2000, seed=0)
    counts = {}
    for s in c.train:
        for t in s:
            counts[t] = counts.get(t, 0) + 1
    freq = np.sort(np.asarray(list(counts.values())))[::-1]
    # Long tail: the top 10 words carry a big share, and many words are rare.
    assert freq[:10].sum() / freq.sum() > 0.25
    assert (freq <= 5).sum() > 20


def test_users_differ_by_cohort():
    gen = KeyboardTextGenerator(0)
    users = gen.users(4)
    assert [u.cohort for u in users] == ["mainstream", "niche", "mainstream", "niche"]
    niche_text = " ".join(gen.user_messages(users[1], 40))
    assert any(f in niche_text for f in users[1].friends)


def test_corpus_folder_loader(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    para = "The cat sat on the mat. It was happy!\nThe dog ran to the park; it barked.\n"
    for i in range(4):
        (folder / f"book{i}.txt").write_text(para * 60)
    (folder / "README").write_text("not a text file of the corpus")
    c = load_corpus(folder)
    assert c.name == "texts"
    n = c.n_tokens()
    assert n["train"] > n["test"] > 0 and n["val"] > 0
    assert c.train[0][:3] == ["the", "cat", "sat"]
    again = load_corpus(folder)
    assert again.test == c.test  # deterministic split
    single = load_corpus(folder / "book0.txt")
    assert single.n_tokens()["train"] > 0


def test_subsample_train_keeps_every_part_and_the_order(corpus):
    from cases.mobile_keyboard.data import subsample_train

    half = subsample_train(corpus, 0.5, runs=10)
    assert half.val is corpus.val and half.test is corpus.test
    n = len(corpus.train)
    assert abs(len(half.train) - n / 2) <= 10
    # Kept sentences are in their original order and come from all ten runs.
    idx = [next(i for i, s in enumerate(corpus.train) if s is t) for t in half.train]
    assert idx == sorted(idx) and len({i * 10 // n for i in idx}) == 10
    assert subsample_train(corpus, 1.0).train == corpus.train
    for bad in (0.0, 1.5):
        with pytest.raises(DataError):
            subsample_train(corpus, bad)


def test_corpus_loader_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no text files"):
        load_corpus(tmp_path / "empty")
    b = tmp_path / "bin.txt"
    b.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="binary"):
        load_corpus(b)
    t = tmp_path / "tiny.txt"
    t.write_text("two words")
    with pytest.raises(DataError, match="too small"):
        load_corpus(t)


def test_the_training_cap_grows_with_the_corpus():
    from cases.mobile_keyboard.config import get_config

    fast = get_config("fast")
    assert fast.train_minutes(84_000) == pytest.approx(0.336)  # built-in text: about 20 s
    assert fast.train_minutes(1_000_000) == pytest.approx(4.0)  # a 1M-word corpus: 4 min
    assert fast.train_minutes(1_000) == fast.min_train_minutes
    assert fast.train_minutes(10**9) == fast.max_train_minutes
    assert get_config("full").train_minutes(1_070_000) == pytest.approx(14.98)
