"""The response set: normalisation, the k-anonymity rule, clustering, polarity and diversity."""

import numpy as np
import pytest

from cases.email_smart_reply.responses import (
    build_response_set,
    cluster_responses,
    display_form,
    diversity,
    normalize_reply,
    polarity,
    select_diverse,
)


def test_normalize_reply_merges_surface_variants_and_keeps_contractions():
    assert normalize_reply("Thanks !") == "thanks"
    assert normalize_reply("  THANKS.  ") == "thanks"
    assert normalize_reply("thanks!!!") == "thanks"
    assert normalize_reply("I ' m fine , thanks .") == "i'm fine, thanks"
    assert normalize_reply("I\u2019m fine, thanks") == "i'm fine, thanks"
    assert normalize_reply("I ca n't") == "i can't"
    assert normalize_reply("?!") == ""
    assert display_form("That would be great . Thanks !") == "That would be great. Thanks!"


def test_k_anonymity_excludes_a_reply_used_many_times_in_one_thread():
    replies, threads = [], []
    # "Sounds good!" in five different threads: may enter at k = 5.
    for t in range(5):
        replies.append("Sounds good!" if t % 2 else "sounds good .")
        threads.append(f"t{t}")
    # One person's sentence, fifty times in one thread: must never enter.
    replies += ["My secret account number is 1234"] * 50
    threads += ["private"] * 50
    # Four threads only: one short of k = 5.
    replies += ["See you at noon"] * 4
    threads += ["a", "b", "c", "d"]
    rs = build_response_set(replies, threads, k_anon=5)
    assert rs.keys == ["sounds good"]
    assert rs.texts == ["sounds good."]  # 3 threads wrote it this way, 2 wrote "Sounds good!"
    assert rs.n_threads.tolist() == [5] and rs.counts.tolist() == [5]
    assert rs.index_of("SOUNDS GOOD!!") == 0 and rs.index_of("nope") == -1
    assert all(n >= 5 for n in rs.n_threads)
    # At k = 4 the four-thread reply enters; the one-thread sentence still does not.
    rs4 = build_response_set(replies, threads, k_anon=4)
    assert set(rs4.keys) == {"sounds good", "see you at noon"}


def test_response_set_limits_words_and_size():
    replies = ["ok"] * 6 + ["one two three four five six seven"] * 6 + ["yes"] * 7
    threads = list(range(6)) + list(range(6)) + list(range(7))
    rs = build_response_set(replies, threads, k_anon=5, max_words=5)
    assert rs.keys == ["yes", "ok"]  # most threads first; the 7-word reply is too long
    assert build_response_set(replies, threads, k_anon=5, max_size=1).keys == ["yes"]
    with pytest.raises(ValueError):
        build_response_set(["a"], [1, 2])


def test_polarity_lexicon():
    assert polarity("Sure, see you then!") == 1
    assert polarity("Yes .") == 1
    assert polarity("No problem!") == 1
    assert polarity("Sorry, I can't make it.") == -1
    assert polarity("No, thanks.") == -1
    assert polarity("I'm not sure.") == -1
    assert polarity("Thanks!") == 0
    assert polarity("What time?") == 0


def _paraphrase_example():
    texts = [
        "Thanks!",  # 0
        "Thank you!",  # 1
        "Thanks a lot!",  # 2
        "Sure, sounds good.",  # 3
        "Sorry, I can't.",  # 4
        "What time?",  # 5
    ]
    # Toy 3-d embeddings: the three thanks point one way, the others elsewhere.
    emb = np.array(
        [
            [1.0, 0.05, 0.0],
            [0.98, 0.1, 0.0],
            [0.97, 0.0, 0.1],
            [0.0, 1.0, 0.1],
            [0.1, -1.0, 0.0],
            [0.0, 0.1, 1.0],
        ]
    )
    return texts, emb


def test_select_diverse_never_three_thanks():
    texts, emb = _paraphrase_example()
    labels = cluster_responses(emb, n_clusters=4, seed=0)
    assert labels[0] == labels[1] == labels[2]
    pol = np.array([polarity(t) for t in texts])
    scores = np.array([0.9, 0.89, 0.88, 0.5, 0.2, 0.4])  # the thanks all score highest
    pick = select_diverse(scores, labels, pol, k=3)
    assert pick[0] == 0
    assert len({labels[i] for i in pick}) == 3
    assert sum(i in (0, 1, 2) for i in pick) == 1
    # The three shown are more diverse than the three top-scored paraphrases.
    assert diversity(emb[pick]) > diversity(emb[[0, 1, 2]]) + 0.3


def test_select_diverse_adds_a_negative_to_a_yes_no_answer():
    texts, emb = _paraphrase_example()
    labels = np.array([0, 0, 0, 1, 2, 3])
    pol = np.array([polarity(t) for t in texts])
    # Top: a yes, then a thanks, then "what time?", the "no" ranked fourth among clusters.
    scores = np.array([0.8, 0.1, 0.1, 0.9, 0.5, 0.6])
    pick = select_diverse(scores, labels, pol, k=3)
    assert pick[0] == 3  # the best is always kept
    assert {int(pol[i]) for i in pick} >= {1, -1}
    assert 4 in pick and 5 not in pick  # the lowest kept (what time?) made way
    # Outside the window it is not "reasonable", and the plain top three stay.
    assert select_diverse(scores, labels, pol, k=3, window=3) == [3, 0, 5]
    # No polarity among the kept: nothing is forced in.
    pol0 = np.array([0, 0, 0, 0, -1, 0])
    assert select_diverse(scores, labels, pol0, k=3) == [3, 0, 5]


def test_diversity_limits():
    assert diversity(np.ones((3, 4))) == pytest.approx(0.0)
    assert diversity(np.eye(3)) == pytest.approx(1.0)
    assert diversity(np.ones((1, 4))) == 0.0


def test_a_yes_and_a_no_in_one_cluster_are_not_paraphrases():
    texts = ["Yes, I do.", "Certainly.", "No.", "Good-bye."]
    labels = np.array([0, 0, 0, 1])  # the embedding put the short answers together
    pol = np.array([polarity(t) for t in texts])
    assert pol.tolist() == [1, 1, -1, 0]
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert select_diverse(scores, labels, pol, k=3) == [0, 2, 3]
