"""No train/serve skew: one logged request through the training path and the serving path.

The ranker's six dense features are built by `model.ranker_inputs` in both paths; this test
makes sure the two paths feed it the same numbers for a logged home-feed request (the same
history, the same slate, the video ages at the request time) and get identical inputs, and that
the served score (ONNX) matches the trained ranker's score through the one `serving_score`.
"""

import numpy as np
import pytest
import torch

from cases.video_recommendation.config import get_config
from cases.video_recommendation.data import DAY_S, make_builtin
from cases.video_recommendation.model import VideoRecRankerServing, serving_score
from cases.video_recommendation.predictor import VideoRecCandidates, VideoRecPredictor
from cases.video_recommendation.train import (
    build_artifact,
    ranker_features,
    train_rankers,
    train_retrievers,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = get_config("tiny", tower_epochs=1, seq_epochs=1)
    data = make_builtin(cfg, seed=0)
    t = train_retrievers(cfg, data, 0, {})
    train_rankers(cfg, data, t, 0)
    art, parity = build_artifact(t, data, cfg, "builtin", 0, tmp_path_factory.mktemp("a") / "a")
    return cfg, data, t, VideoRecPredictor.load(art), parity


def _logged_request(data, session: int):
    """A logged session's rows, its user's watches before it, and its start time."""
    imp = data.impressions
    rows = np.flatnonzero(imp["session"] == session)
    sub = {k: v[rows] for k, v in imp.items()}
    it = data.interactions
    user, start = int(sub["user"][0]), int(sub["timestamp"].min())
    mine = (it["user"] == user) & (it["timestamp"] < start)
    order = np.argsort(it["timestamp"][mine], kind="stable")
    return sub, it["item"][mine][order], start


def test_a_logged_request_gets_identical_features_in_training_and_serving(trained):
    cfg, data, t, pred, _ = trained
    # A late session of a user with a history (the features then depend on it).
    imp = data.impressions
    sessions = np.unique(imp["session"][imp["day"] == cfg.n_days - 1])
    for session in sessions[::-1]:
        sub, history, start = _logged_request(data, int(session))
        if len(history) >= 3:
            break
    item_views = np.bincount(data.interactions["item"], minlength=data.n_items).astype(np.float32)
    # Training path: example age 0 (t_end = the request time), ages at the request time.
    train_feats = ranker_features(sub, data, t.models["two_tower"], float(start), item_views)
    # Serving path: the predictor's own tensors, with the video ages at the request time.
    pred.item_age_days = (start - data.item_upload_s) / DAY_S
    hist = [history.tolist()]
    u = pred.user_vectors(hist)
    items = sub["item"]
    from cases.video_recommendation.model import tower_score

    tower = tower_score(u[np.zeros(len(items), int)], pred.tower_items[items])
    cand = VideoRecCandidates(items, np.zeros(len(items)), np.full(len(items), "x"), tower)
    serve_feats = pred.features(hist, [cand])
    for key in ("item", "topic", "dense"):
        np.testing.assert_array_equal(train_feats[key], serve_feats[key], err_msg=key)
    assert np.all(train_feats["dense"][:, 5] == 0)  # example age: 0 at the request time
    assert train_feats["dense"][:, 3].max() > 0  # a real topic share, not an empty history

    # The served score: the ONNX ranker through `serving_score`, as the trained ranker scores.
    served = pred.rank(hist, [cand])[0]
    ranker = VideoRecRankerServing(t.rankers["multitask"]).eval()
    with torch.no_grad():
        logits = ranker(*(torch.from_numpy(train_feats[k]) for k in ("item", "topic", "dense")))
    np.testing.assert_allclose(served, serving_score(logits.numpy()), atol=1e-4)


def test_the_onnx_ranker_matches_torch(trained):
    assert trained[4] is not None and trained[4] <= 1e-4
