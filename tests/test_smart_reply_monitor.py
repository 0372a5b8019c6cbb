"""The smart-reply artifact ships a golden set and the monitor's reference (shared.golden): the
saved model reproduces its golden scores, a model with shuffled weights is refused, and the
reference describes the validation traffic."""

import shutil

import numpy as np
import pytest

from shared.errors import ArtifactError


@pytest.fixture(scope="module")
def artifact(smart_reply_tiny):
    return smart_reply_tiny


def test_observation_features_and_scores():
    from cases.email_smart_reply.predictor import message_features

    f = message_features(["Can we meet?", "Привет всем", "a  b   c"])
    assert f["message_chars"] == [12.0, 11.0, 8.0]
    assert f["message_words"] == [3.0, 2.0, 3.0]
    assert f["non_ascii_share"][0] == 0.0
    assert f["non_ascii_share"][1] == pytest.approx(10 / 11)


def test_golden_set_reproduced_and_reference_shipped(artifact):
    from cases.email_smart_reply.predictor import SmartReplyPredictor
    from shared.golden import check_golden, read_golden, read_reference

    art, models = artifact
    golden, ref = read_golden(art), read_reference(art)
    assert len(golden["requests"]) == len(golden["scores"]) > 0
    assert all(set(r) == {"message", "k"} for r in golden["requests"])
    assert set(ref.features) == {
        "message_chars",
        "message_words",
        "non_ascii_share",
        "known_word_share",
        "top_score",
    }
    assert ref.decision == "suggest"
    assert ref.decision_threshold == pytest.approx(models.trigger.threshold)
    assert 0.0 < ref.decision_rate <= 1.0
    model = SmartReplyPredictor.load(art)
    assert "reproduced" in check_golden(model, art)
    # served answers carry what the monitor needs: the same figures as computed fresh
    reqs = golden["requests"][:8]
    f1, s1 = model.observation(reqs, model.suggest_batch(reqs))
    f2, s2 = model.observation(reqs)
    assert np.allclose(s1, s2, atol=1e-4) and np.allclose(
        f1["top_score"], f2["top_score"], atol=1e-4
    )
    assert len(s1) == len(reqs) and all(len(v) == len(reqs) for v in f1.values())


def test_shuffled_weights_refused_by_the_golden_check(artifact, tmp_path):
    from cases.email_smart_reply.predictor import SmartReplyPredictor
    from shared.golden import check_golden, shuffle_weights

    art, _ = artifact
    bad = tmp_path / "bad"
    shutil.copytree(art, bad)
    assert shuffle_weights(bad, seed=1)
    model = SmartReplyPredictor.load(bad)  # the sha256 manifest was rewritten: it loads
    with pytest.raises(ArtifactError, match="golden set"):
        check_golden(model, bad)
