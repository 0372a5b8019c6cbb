"""Video recommendation end to end on the tiny preset: metrics.json, report, artifact, registry."""

import argparse
import json

import numpy as np
import pytest

from cases.video_recommendation import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vr") / "run"
    args = argparse.Namespace(
        preset="tiny",
        data="builtin",
        out=out,
        seed=0,
        seq_epochs=None,
        tower_epochs=None,
        skip_loop=False,
    )
    path = cli.run(args)
    assert path == out / "metrics.json"
    return out


def test_metrics_has_the_retrieval_table(run_dir):
    doc = json.loads((run_dir / "metrics.json").read_text())
    table = doc["tables"]["retrieval"]
    for row in ("popularity", "item_knn", "ease", "two_tower", "sasrec", "served"):
        for metric in ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "coverage@10"):
            assert 0.0 <= table[row][metric] <= 1.0, (row, metric)
    # Item-item models beat popularity on the simulator's next watch (a quality floor).
    assert max(table[n]["ndcg@10"] for n in ("ease", "item_knn")) > table["popularity"]["ndcg@10"]
    for name in ("ranking", "data_gate", "ab_test", "off_policy", "feedback_loop_final_round"):
        assert name in doc["tables"], name
    gate = doc["tables"]["data_gate"]
    assert all(
        gate[f"injected_{k}"]["quarantined"] == 1
        for k in ("duplicates", "bot_flood", "zero_watch", "schema_drift")
    )
    assert list((run_dir / "quarantine").glob("*.npz"))
    assert (run_dir / "feedback_loop.png").exists()
    assert "retrieval_ndcg@10" in doc["cohorts"]
    assert doc["extra"]["protocol"] == "leave_last_out" and doc["extra"]["skipped_models"] == {}


def test_what_is_named_as_served_is_the_artifact_and_promotion_scores_it(run_dir):
    from cases.video_recommendation.predictor import VideoRecPredictor

    doc = json.loads((run_dir / "metrics.json").read_text())
    p = VideoRecPredictor.load(run_dir / "artifact")
    served = doc["extra"]["served_model"]
    # The name covers the artifact's sources, the shipped retriever first, and its ranker.
    assert served["production_retriever"] == p.cfg["production_model"]
    assert served["sources"] == p.cfg["served_retrievers"]
    assert doc["production_model"].startswith(p.cfg["production_model"])
    assert ">ranker>" in doc["production_model"] and p.ranker is not None
    # The shipped retriever is the best on validation, and the record holds the A/B numbers of
    # the served funnel (the simulator's ground truth), not an offline row's.
    val = {n: r["val_ndcg@10"] for n, r in doc["tables"]["retrieval"].items() if n != "served"}
    assert p.cfg["production_model"] == max(val, key=val.get)
    reg = doc["extra"]["registry"]
    rec = json.loads(
        (run_dir / "registry" / "versions" / f"{reg['version']}.record.json").read_text()
    )
    assert rec["metric"] == "ab_watch_min"
    assert rec["candidate"]["all"] == pytest.approx(
        doc["tables"]["ab_test"]["production_funnel"]["watch_min"]
    )
    assert rec["baseline"]["all"] == pytest.approx(
        doc["tables"]["ab_test"]["popularity"]["watch_min"]
    )
    assert rec["preset"] == "tiny" and rec["seed"] == 0 and len(rec["fingerprint"]) == 64
    assert reg["promoted"] == (rec["candidate"]["all"] > rec["baseline"]["all"])


def test_artifact_loads_and_recommends(run_dir):
    from cases.video_recommendation.predictor import VideoRecPredictor

    p = VideoRecPredictor.load(run_dir / "artifact")
    out = p.recommend_batch([1, "stranger"], [None, None], 5)
    assert len(out[0]["items"]) == 5 and not out[0]["cold_start"]
    assert out[1]["cold_start"] and len(out[1]["items"]) == 5
    assert np.all(np.isfinite([x["score"] for x in out[0]["items"]]))


def test_tampered_artifact_is_refused(run_dir, tmp_path):
    import shutil

    from cases.video_recommendation.predictor import VideoRecPredictor
    from shared.errors import ArtifactError

    copy = tmp_path / "copy"
    shutil.copytree(run_dir / "artifact", copy)
    with open(copy / "ranker.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError):
        VideoRecPredictor.load(copy)


def test_load_test_payloads_mix_known_users_histories_and_visitors():
    from cases.video_recommendation.train import monitor_requests as _load_payloads

    hist = {"3": [1, 2, 3], "7": [4]}
    out = _load_payloads(hist, 400, seed=0)
    known = [p for p in out if isinstance(p.get("user_id"), int)]
    given = [p for p in out if "history" in p]
    visitors = [p for p in out if str(p.get("user_id", "")).startswith("visitor-")]
    assert len(known) + len(given) + len(visitors) == 400
    assert 0.6 < len(known) / 400 < 0.8 and 0.15 < len(given) / 400 < 0.35 and visitors
    assert all(str(p["user_id"]) in hist for p in known)
    assert all(p["history"] and set(p["history"]) <= {1, 2, 3, 4} for p in given)
    assert _load_payloads(hist, 50, seed=1) == _load_payloads(hist, 50, seed=1)


def test_artifact_carries_a_golden_set_that_catches_shuffled_weights_and_drift_moves_it(
    run_dir, tmp_path
):
    import shutil

    from cases.video_recommendation.predictor import VideoRecPredictor
    from cases.video_recommendation.serve import drift_requests
    from shared.golden import check_golden, shuffle_weights

    art = run_dir / "artifact"
    golden = json.loads((art / "golden.json").read_text())
    assert len(golden["requests"]) == 200 and (art / "monitor_reference.json").exists()
    pred = VideoRecPredictor.load(art)
    assert "reproduced" in check_golden(pred, art)

    broken = tmp_path / "broken"
    shutil.copytree(art, broken)
    shuffle_weights(broken, seed=0)
    with pytest.raises(Exception, match="golden"):
        check_golden(VideoRecPredictor.load(broken), broken)

    base, _ = pred.observation(golden["requests"])
    shifts = drift_requests(golden["requests"])
    cold, _ = pred.observation(shifts["new visitors (cold start)"])
    long, _ = pred.observation(shifts["long histories (200 watches)"])
    blocked, _ = pred.observation(shifts["heavy blocking (50 ids)"])
    assert np.mean(cold["cold_start"]) == 1.0 > np.mean(base["cold_start"])
    assert np.mean(long["history_len"]) == 200 > np.mean(base["history_len"])
    assert np.mean(blocked["blocked"]) == 50 > np.mean(base["blocked"])
