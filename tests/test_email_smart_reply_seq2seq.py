"""The LSTM seq2seq scorer: it learns its training replies, batching changes no score, costs."""

import numpy as np
import pytest
import torch

from cases.email_smart_reply.seq2seq import Seq2SeqScorer, measure_cost, train_seq2seq

PAIRS = [
    ("Can we meet tomorrow morning?", "Sure, see you tomorrow."),
    ("Did you send the report?", "Yes, I sent it yesterday."),
    ("Is the printer fixed?", "No, it is still broken."),
    ("Thanks for your help!", "You're welcome."),
    ("What time does the train leave?", "It leaves at nine."),
    ("Do you want some coffee?", "No thanks, I just had one."),
]
MESSAGES = [m for m, _ in PAIRS]
REPLIES = [r for _, r in PAIRS]


@pytest.fixture(scope="module")
def scorer():
    return train_seq2seq(
        PAIRS * 4,
        time_cap_s=60,
        seed=0,
        embed_dim=32,
        hidden_dim=64,
        min_count=1,
        epochs=30,
        batch_size=8,
        dropout=0.0,
        lr=1e-2,
        threads=1,
        val_fraction=0,
    )


def test_training_reply_scores_above_the_others(scorer):
    lp = scorer.score(MESSAGES, REPLIES)  # (N, R)
    assert lp.shape == (6, 6) and np.all(lp <= 0)
    assert (lp.argmax(1) == np.arange(6)).all()


def test_an_untrained_scorer_does_not_rank_them():
    torch.manual_seed(0)
    from cases.email_smart_reply.compose import ComposeVocab

    vocab = ComposeVocab.build(MESSAGES + REPLIES, size=500, min_count=1)
    lp = Seq2SeqScorer(vocab, 32, 64).score(MESSAGES, REPLIES)
    assert (lp.argmax(1) == np.arange(6)).sum() < 6


def test_batching_changes_no_score(scorer):
    lp = scorer.score(MESSAGES, REPLIES)
    # Replies permuted, chunks of 2 (sorting by length and trimming padding inside chunks).
    perm = [3, 0, 5, 1, 4, 2]
    lp2 = scorer.score(MESSAGES, [REPLIES[i] for i in perm], chunk=2)
    np.testing.assert_allclose(lp2, lp[:, perm], atol=1e-4)
    # The training path (one message, one reply, forward) gives the same log-probability.
    msg, lengths = scorer._message_batch([MESSAGES[1]])
    inp, tgt = scorer._reply_batch([REPLIES[1]])
    with torch.no_grad():
        tok = scorer(msg, lengths, inp).log_softmax(-1).gather(-1, tgt[..., None])[..., 0]
    assert float(tok.sum()) == pytest.approx(float(lp[1, 1]), abs=1e-4)
    cands = scorer.score_candidates(MESSAGES[:2], [REPLIES[:3], REPLIES[3:]])
    np.testing.assert_allclose(cands, np.stack([lp[0, :3], lp[1, 3:]]), atol=1e-4)
    assert scorer.score([], REPLIES).shape == (0, 6)


def test_state_arrays_round_trip(scorer):
    again = Seq2SeqScorer.from_arrays(scorer.state_arrays())
    np.testing.assert_allclose(again.score(MESSAGES, REPLIES), scorer.score(MESSAGES, REPLIES))
    with pytest.raises(ValueError):
        Seq2SeqScorer.from_arrays({"seq2seq.dims": np.array([32, 64])})


def test_measure_cost(scorer):
    c = measure_cost(scorer, MESSAGES[:2], REPLIES * 3, threads=1, chunk=4)
    assert c["R"] == 18
    assert c["ms_per_suggestion_p95"] >= c["ms_per_suggestion_p50"] > 0
    assert c["flops_per_suggestion_padded"] >= c["flops_per_suggestion"] > 0
    assert 0 < c["output_layer_share"] < 1 and 0 <= c["padded_step_share"] < 1
