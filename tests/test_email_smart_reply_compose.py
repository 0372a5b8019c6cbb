"""Smart Compose: overfit a few pairs, context conditioning, the metrics by hand, round trips."""

import numpy as np
import pytest
import torch

from cases.email_smart_reply.compose import ComposeModel, evaluate_compose, train_compose
from shared.artifacts import load_artifact, save_artifact

PAIRS = [
    ("Can we meet tomorrow morning?", "Sure, see you tomorrow morning."),
    ("Could you call me later today?", "Sure, I will call you tonight."),
    ("Did you send the report?", "Yes, I sent it yesterday."),
    ("Is the printer fixed?", "No, it is still broken."),
    ("Thanks for your help!", "You're welcome, any time."),
    ("What time does the train leave?", "It leaves at nine."),
]


@pytest.fixture(scope="module")
def model():
    # Tiny and overfit: 6 pairs, no hold-out (< 20 pairs), fixed epochs.
    return train_compose(
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


def test_overfit_completes_training_replies(model):
    assert model.complete("Did you send the report?", "yes, i ") == "sent it yesterday"
    assert model.complete("Did you send the report?", "Yes, I se") == "nt it yesterday"
    assert model.complete("What time does the train leave?", "it leaves at ") == "nine"
    assert model.complete("What time does the train leave?", "it leaves at nine") == ""
    assert model.complete("Did you send the report?", "yes, i ", max_words=1) == "sent"


def test_the_message_decides_the_completion(model):
    # Same typed prefix, different incoming email, different continuation.
    assert model.complete("Can we meet tomorrow morning?", "sure, ") == "see you tomorrow"
    assert model.complete("Could you call me later today?", "sure, ") == "i will call"


def test_no_suggestion_when_not_confident(model):
    assert model.complete("Did you send the report?", "yes, i ", threshold=1.01) == ""
    assert model.complete("Did you send the report?", "zzz") == ""  # no word starts so


class _Stub:
    """Always continues toward "see you at lunch" (the truth is "see you at noon")."""

    target = "see you at lunch"

    def complete(self, message, prefix, max_words=3, threshold=None):
        if not self.target.startswith(prefix):
            return ""
        rest = self.target[len(prefix) :]
        return " ".join(rest.split(" ")[:max_words]) if rest else ""


def test_evaluate_compose_by_hand():
    r = evaluate_compose(_Stub(), [("lunch?", "See you at noon.")])
    # Boundaries: "" -> see you at (3/3 right), "see " -> you at lunch (2 of 3),
    # "see you " -> at lunch (1 of 2), "see you at " -> lunch (0 of 1).
    assert r["exact_match@1"] == pytest.approx(3 / 4)
    assert r["exact_match@2"] == pytest.approx(2 / 3)
    assert r["exact_match@3"] == pytest.approx(1 / 2)
    assert r["shown_rate"] == pytest.approx(1.0)
    assert r["shown_precision"] == pytest.approx(1 / 4)
    # Typing "see you at noon" (15 chars): Tab takes "see you at", then 5 characters typed.
    assert r["n_keystrokes"] == 6
    assert r["keystrokes_saved"] == pytest.approx(1 - 6 / 15)
    assert r["ms_p95"] >= r["ms_p50"] >= 0


def test_state_arrays_round_trip_through_an_artifact(model, tmp_path):
    arrays = model.state_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    save_artifact(tmp_path / "a", {k: torch.from_numpy(v) for k, v in arrays.items()}, {}, {}, "x")
    again = ComposeModel.from_arrays(load_artifact(tmp_path / "a").tensors)
    assert again.vocab.itos == model.vocab.itos and again.threshold == model.threshold
    for message, reply in PAIRS:
        np.testing.assert_allclose(
            again.next_word_logp(message, ["sure"]),
            model.next_word_logp(message, ["sure"]),
            atol=1e-6,
        )
        assert again.complete(message, reply[:7]) == model.complete(message, reply[:7])
    with pytest.raises(ValueError):
        ComposeModel.from_arrays({k: v for k, v in arrays.items() if k != "compose.emb"})


def test_ngram_completes_and_uses_the_message_cue():
    pairs = [
        ("Are you coming tonight?", "Yes, I will be there."),
        ("Thanks for dinner!", "You're welcome, come again."),
        ("The meeting moved to Friday.", "OK, noted."),
    ] * 3
    ng = train_compose(pairs, seed=0, kind="ngram", min_count=1)
    assert ng.kind == "ngram"
    assert ng.complete("Will you come?", "") == "yes i will"  # a question: the cue is "question"
    assert ng.complete("Thank you so much!", "") == "you're welcome come"
    assert ng.complete("Are you coming tonight?", "yes, i will ") == "be there"
    assert ng.complete("Are you coming tonight?", "yes, i will b") == "e there"
    again = ComposeModel.from_arrays(ng.state_arrays())
    assert again.kind == "ngram" and again.complete("Will you come?", "") == "yes i will"
    p = np.exp(ng.next_word_logp("Will you come?", ["yes"]))
    assert p.sum() == pytest.approx(1.0)


def test_auto_keeps_the_better_on_held_out_pairs():
    pairs = PAIRS * 5  # 30 pairs: 3 held out
    m = train_compose(
        pairs, time_cap_s=5, seed=0, embed_dim=16, hidden_dim=16, epochs=1, kind="auto"
    )
    assert set(m.selection) == {"lstm", "ngram"}
    assert m.selection[m.kind] == max(m.selection.values())
    with pytest.raises(ValueError):
        train_compose(pairs, kind="gru")


def test_a_very_long_prefix_is_cut_not_a_crash(model):
    long_prefix = "please " * 5000
    assert isinstance(model.complete("Did you send the report?", long_prefix), str)
    assert isinstance(model.complete("x" * 100_000, "yes, i se"), str)
