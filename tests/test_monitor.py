"""The live monitor: drift per feature, collapsed scores, a decision rate out of band."""

import json
import logging

import numpy as np
import pytest

from shared.monitor import (
    Monitor,
    MonitorReference,
    MonitorThresholds,
    build_reference,
    evaluate_window,
    ks_statistic,
)


def _reference(seed=0, n=5000):
    rng = np.random.default_rng(seed)
    length = rng.poisson(12, n).astype(float)
    caps = rng.beta(2, 20, n)
    scores = 1 / (1 + np.exp(-(rng.normal(-2, 1.5, n))))  # mostly low, some high
    ref = build_reference(
        {"length": length, "caps": caps}, scores, decision_threshold=0.7, decision="auto_remove"
    )
    return ref, rng


def _feed(monitor, rng, n, shift=0.0, score_fn=None):
    for _ in range(n):
        length = rng.poisson(12 + shift)
        caps = rng.beta(2, 20)
        score = score_fn(rng) if score_fn else 1 / (1 + np.exp(-rng.normal(-2, 1.5)))
        monitor.observe({"length": length, "caps": caps}, score)


def test_no_alarm_on_traffic_like_the_reference():
    ref, rng = _reference()
    m = Monitor(ref, name="toy")
    _feed(m, rng, 1000)
    status = m.status()
    assert status["ready"] and status["alarms"] == {}, status["alarms"]
    assert status["features"]["length"]["psi"] < 0.1
    lo, hi = status["decision_band"]
    assert lo <= ref.decision_rate <= hi


def test_drift_names_the_feature_that_moved(caplog):
    ref, rng = _reference()
    m = Monitor(ref, name="toy")
    with caplog.at_level(logging.WARNING, logger="casebook"):
        _feed(m, rng, 500, shift=10.0)  # messages ~twice as long: another corpus
    alarms = m.status()["alarms"]
    assert "drift" in alarms and "length" in alarms["drift"] and "caps" not in alarms["drift"]
    assert m.status()["features"]["length"]["psi"] > 0.25
    lines = [r.getMessage() for r in caplog.records if "ALARM drift" in r.getMessage()]
    assert len(lines) == 1  # logged once when it starts firing, not at every check


def test_constant_scores_raise_the_collapse_alarm_within_a_stated_count():
    ref, rng = _reference()
    th = MonitorThresholds()
    m = Monitor(ref, name="toy", thresholds=th)
    _feed(m, rng, 300)
    assert m.status()["alarms"] == {}
    # A broken model goes live: the same score for everything.
    fired_at = None
    for i in range(1, th.window + 1):
        _feed(m, rng, 1, score_fn=lambda r: 0.12)
        if "collapse" in m.last["alarms"]:
            fired_at = i
            break
    # The window still holds 300 healthy scores; collapse needs the spread to fall 20-fold,
    # so it fires once the healthy ones have mostly left the window: within one window.
    assert fired_at is not None and fired_at <= th.window
    assert "score_drift" in m.last["alarms"]


def test_decision_rate_out_of_band():
    ref, rng = _reference()
    m = Monitor(ref, name="toy")
    # Half the traffic auto-removed (a model that learned to flag everything long).
    _feed(m, rng, 400, score_fn=lambda r: 0.95 if r.random() < 0.5 else 0.05)
    assert "decision_rate" in m.status()["alarms"]
    assert "auto_remove rate" in m.status()["alarms"]["decision_rate"]


def test_nan_scores_are_an_alarm_and_the_status_is_json():
    ref, rng = _reference()
    m = Monitor(ref, name="toy")
    _feed(m, rng, 150, score_fn=lambda r: float("nan") if r.random() < 0.3 else 0.2)
    status = m.status()
    assert "collapse" in status["alarms"] or "score_drift" in status["alarms"]
    json.dumps(status, allow_nan=False)


def test_not_ready_before_min_count_and_reference_round_trip():
    ref, _ = _reference()
    assert evaluate_window(ref, {"length": [1, 2]}, [0.1, 0.2]) == {
        "n": 2,
        "ready": False,
        "alarms": {},
    }
    again = MonitorReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref and len(ref.scores) <= 2000


def test_ks_statistic():
    a = np.arange(100.0)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 1000) == 1.0
    assert ks_statistic(a, a + 50) == pytest.approx(0.5)


def test_psi_sees_a_point_mass_feature_move_out_of_range():
    from shared.monitor import drift_figures

    rng = np.random.default_rng(0)
    ref = np.where(rng.random(2000) < 0.9, 0.0, rng.random(2000) * 0.3)  # mostly 0
    same = np.where(rng.random(200) < 0.9, 0.0, rng.random(200) * 0.3)
    assert drift_figures(ref, same)["psi"] < 0.25
    moved = drift_figures(ref, np.ones(200))  # every word unknown
    assert moved["psi"] > 5 and moved["ks"] == 1.0


def test_psi_sees_a_constant_feature_move():
    from shared.monitor import drift_figures

    assert drift_figures(np.zeros(2000), np.zeros(200)) == {"psi": 0.0, "ks": 0.0}
    moved = drift_figures(np.zeros(2000), np.full(200, 0.4))  # e.g. non-ASCII share
    assert moved["psi"] > 5 and moved["ks"] == 1.0
