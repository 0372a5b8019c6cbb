"""Classification metrics: closed-form values, limits and clear errors on degenerate input."""

from __future__ import annotations

import numpy as np
import pytest

from shared.classification import (
    choose_threshold,
    expected_calibration_error,
    grouped_auc,
    log_loss,
    pr_auc,
    precision_at_recall,
    reliability_plot,
    roc_auc,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
PERFECT = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])


def test_auc_perfect_inverted_and_random():
    assert roc_auc(Y, PERFECT) == 1.0 and pr_auc(Y, PERFECT) == 1.0
    assert roc_auc(Y, -PERFECT) == 0.0
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    assert roc_auc(y, rng.random(20_000)) == pytest.approx(0.5, abs=0.02)
    assert pr_auc(y, rng.random(20_000)) == pytest.approx(y.mean(), abs=0.02)
    assert roc_auc(Y, np.zeros(8)) == 0.5  # all ties count one half


def test_auc_refuses_one_class_and_bad_labels():
    with pytest.raises(ValueError, match="one class"):
        roc_auc(np.ones(5), np.arange(5))
    with pytest.raises(ValueError, match="one class"):
        pr_auc(np.zeros(5), np.arange(5))
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        roc_auc([], [])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [np.nan, 0.2])


def test_log_loss_closed_form():
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert log_loss([1], [0.9]) == pytest.approx(-np.log(0.9))
    assert np.isfinite(log_loss([1, 0], [0.0, 1.0]))  # clipped, not infinite
    with pytest.raises(ValueError):
        log_loss([1], [1.5])


def test_grouped_auc_weights_groups_by_size_and_skips_single_class():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.1, 0.9, 0.5, 0.5, 0.5, 0.5])
    g = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    # group 0: AUC 1 (4 rows); group 1: AUC 0 (2 rows); groups 2 and 3 have one class
    assert grouped_auc(y, s, g) == pytest.approx((4 * 1.0 + 2 * 0.0) / 6)
    with pytest.raises(ValueError, match="no group"):
        grouped_auc([0, 1], [0.1, 0.2], [0, 1])


def test_precision_at_recall():
    p, t = precision_at_recall(Y, PERFECT, recall=1.0)
    assert p == 1.0 and t == pytest.approx(0.6)
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    p, t = precision_at_recall(y, s, recall=2 / 3)
    assert p == pytest.approx(2 / 3) and t == pytest.approx(0.7)
    p, t = precision_at_recall(y, s, recall=1.0)
    assert p == pytest.approx(3 / 5) and t == pytest.approx(0.5)
    with pytest.raises(ValueError, match="recall"):
        precision_at_recall(y, s, recall=0.0)


def test_choose_threshold_follows_costs():
    y = np.array([0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert choose_threshold(y, s) == pytest.approx(0.5)  # one FN, no FP; tie -> higher threshold
    assert choose_threshold(y, s, cost_fp=1, cost_fn=10) == pytest.approx(0.3)  # catch all
    assert choose_threshold(y, s, cost_fp=100, cost_fn=1) == pytest.approx(0.5)  # no FP
    s_bad = np.array([0.1, 0.2, 0.9])  # the top score is a negative
    t = choose_threshold([1, 1, 0], s_bad, cost_fp=100, cost_fn=1)
    assert t > s_bad.max() and np.isfinite(t)  # flag nothing
    assert choose_threshold(Y, PERFECT) == pytest.approx(0.6)


def test_ece_zero_when_bins_are_calibrated():
    # 10 predictions of 0.25 with 25% positives and 10 of 0.75 with 75%: each bin exact
    p = np.r_[np.full(8, 0.25), np.full(8, 0.75)]
    y = np.r_[[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0, abs=1e-12)
    # Always predicting 1.0 on balanced labels: one bin, gap 0.5
    assert expected_calibration_error([0, 1], [1.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        expected_calibration_error([0, 1], [0.5, 1.2])


def test_reliability_plot_overlays_models():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    fig = reliability_plot(y, p, label="calibrated")
    reliability_plot(y, p**2, ax=fig.axes[0], label="overconfident")
    assert len(fig.axes[0].lines) == 3  # diagonal + two models
    assert "ECE" in fig.axes[0].get_legend().get_texts()[1].get_text()


def test_grouped_auc_matches_per_group_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    g = rng.integers(0, 50, 1000)
    y = (rng.random(1000) < 0.3).astype(int)
    s = np.round(rng.random(1000) * 4) / 4  # coarse scores: many ties inside groups
    total = weight = 0.0
    for k in np.unique(g):
        m = g == k
        if y[m].min() != y[m].max():
            total += m.sum() * roc_auc_score(y[m], s[m])
            weight += m.sum()
    assert grouped_auc(y, s, g) == pytest.approx(total / weight, abs=1e-12)
