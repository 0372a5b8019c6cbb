"""What is scored is what serves: the served rows come from the saved artifact's predictor."""

import shutil

import numpy as np
import pytest

from cases.email_smart_reply import evaluate as ev
from cases.email_smart_reply.predictor import SmartReplyPredictor
from shared.artifacts import rewrite_artifact


@pytest.fixture(scope="module")
def served(smart_reply_tiny):
    art, models = smart_reply_tiny
    pred = SmartReplyPredictor.load(art)
    texts = list(models.responses.texts)
    msgs = ["Can we meet at 3pm?", "Thanks for the report!", "Are you coming tonight?"] * 10
    replies = texts[:30] if len(texts) >= 30 else (texts * 30)[:30]
    return art, models, pred, msgs, replies


def _score(pred, msgs, replies):
    rows, cands = ev.candidate_table(len(msgs), 30, 30, seed=0)
    requests = [{"message": m, "k": 3} for m in msgs]
    res = ev.one_of_100(ev.served_score_matrix(pred), requests, replies, rows, cands)
    return res["scores"]


def test_artifact_reply_tower_made_the_response_set(served):
    _, models, pred, _, _ = served
    # The shipped reply tower embeds the response set as training did (torch, 1e-4).
    e = pred.embed_replies(list(models.responses.texts))
    np.testing.assert_allclose(e, pred.reply_emb, atol=1e-4)
    torch_e = models.scorers[models.production].embed(list(models.responses.texts), "reply")
    np.testing.assert_allclose(e, torch_e, atol=1e-4)


def test_served_scores_are_the_predictors(served):
    _, _, pred, msgs, replies = served
    s = _score(pred, msgs, replies)
    rows, cands = ev.candidate_table(len(msgs), 30, 30, seed=0)
    m = pred.embed_messages(msgs)
    r = pred.embed_replies(replies)
    np.testing.assert_allclose(s, np.einsum("pd,pcd->pc", m[rows], r[cands]), atol=1e-6)


def test_a_different_reply_tower_moves_the_served_score(served, tmp_path):
    art, _, pred, msgs, replies = served
    broken = tmp_path / "art"
    shutil.copytree(art, broken)
    # The message tower in the reply tower's place: a well-formed but different artifact.
    rewrite_artifact(broken, {"reply_tower.onnx": (broken / "message_tower.onnx").read_bytes()})
    other = SmartReplyPredictor.load(broken)
    assert not np.allclose(_score(other, msgs, replies), _score(pred, msgs, replies), atol=1e-3)


def test_pick_batch_is_what_suggest_shows(served):
    _, _, pred, msgs, _ = served
    requests = [{"message": m, "k": 3} for m in msgs[:3]]
    picks, cosines, top = pred.pick_batch(requests)
    for ans, pick, cos in zip(pred.suggest_batch(requests), picks, cosines, strict=True):
        if ans["triggered"]:
            assert [s["text"] for s in ans["suggestions"]] == [pred.texts[j] for j in pick]
            assert [s["score"] for s in ans["suggestions"]] == [round(c, 4) for c in cos]
        assert ans["top_score"] == pytest.approx(max(cos), abs=1e-4)
