"""Bias metrics against a hand-computed example and their limits."""

import math

import numpy as np
import pytest

from shared.fairness import (
    bias_markdown,
    bias_table,
    bnsp_auc,
    bpsn_auc,
    counterfactual_flip_rate,
    final_bias_metric,
    power_mean,
    subgroup_auc,
    worst_subgroup,
)

# Rows 0-3 mention the identity (the subgroup), rows 4-7 do not (the background).
Y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
S = np.array([0.9, 0.4, 0.6, 0.2, 0.8, 0.4, 0.1, 0.5])
MASK = np.array([True] * 4 + [False] * 4)


def test_subgroup_auc_by_hand():
    # Subgroup positives {0.9, 0.4} vs negatives {0.6, 0.2}: 0.9 beats both, 0.4 beats 0.2 only.
    assert subgroup_auc(Y, S, MASK) == pytest.approx(3 / 4)


def test_bpsn_auc_by_hand():
    # Background positives {0.8, 0.5} vs subgroup negatives {0.6, 0.2}: 0.5 < 0.6 is the miss.
    assert bpsn_auc(Y, S, MASK) == pytest.approx(3 / 4)


def test_bnsp_auc_by_hand_with_a_tie():
    # Subgroup positives {0.9, 0.4} vs background negatives {0.4, 0.1}: 0.4 vs 0.4 ties (1/2).
    assert bnsp_auc(Y, S, MASK) == pytest.approx(3.5 / 4)


def test_one_class_subgroup_is_nan_and_skipped():
    only_negatives = np.array([False, False, True, True, False, False, False, False])
    assert math.isnan(subgroup_auc(Y, S, only_negatives))
    assert math.isnan(bnsp_auc(Y, S, only_negatives))  # no subgroup positives
    assert bpsn_auc(Y, S, only_negatives) == pytest.approx(
        # Background positives {0.9, 0.4, 0.8, 0.5} vs subgroup negatives {0.6, 0.2}.
        (2 + 1 + 2 + 1) / 8
    )
    table = bias_table(Y, S, {"id": MASK, "small": only_negatives})
    assert table["id"]["n"] == 4 and table["id"]["n_pos"] == 2
    assert table["small"]["n_pos"] == 0
    # The NaN subgroup AUC is skipped: the power mean is the other subgroup's value.
    assert power_mean([table["id"]["subgroup_auc"], table["small"]["subgroup_auc"]], -5) == (
        pytest.approx(0.75)
    )
    assert worst_subgroup(table) == ("id", pytest.approx(0.75))
    assert worst_subgroup(table, "bnsp_auc") == ("id", pytest.approx(0.875))  # NaN skipped
    md = bias_markdown(table)
    assert "| small | 2 | 0 | n/a |" in md


def test_power_mean_closed_forms_and_limits():
    assert power_mean([0.5, 1.0], 1) == pytest.approx(0.75)
    assert power_mean([0.5, 1.0], -1) == pytest.approx(2 / 3)  # harmonic mean
    assert power_mean([0.25, 1.0], 0) == pytest.approx(0.5)  # geometric mean
    assert power_mean([0.0, 1.0], -5) == 0.0
    assert math.isnan(power_mean([float("nan")], -5))
    # p = -5 sits near the minimum.
    assert 0.5 < power_mean([0.5, 0.9, 0.9, 0.9], -5) < 0.65  # arithmetic mean 0.8
    with pytest.raises(ValueError):
        power_mean([-0.1, 0.5], 1)


def test_final_bias_metric_by_hand():
    table = {
        "a": {"subgroup_auc": 0.8, "bpsn_auc": 0.6, "bnsp_auc": 0.9},
        "b": {"subgroup_auc": 0.9, "bpsn_auc": float("nan"), "bnsp_auc": 0.7},
    }
    # p = 1: means 0.85, 0.6 (NaN skipped), 0.8 -> 0.25 * 0.8 + 0.75 * 0.75.
    assert final_bias_metric(0.8, table, p=1) == pytest.approx(0.2 + 0.75 * 0.75)
    # The Jigsaw default (p = -5) punishes the weaker subgroup harder.
    assert final_bias_metric(0.8, table) < final_bias_metric(0.8, table, p=1)
    perfect = {"a": {"subgroup_auc": 1.0, "bpsn_auc": 1.0, "bnsp_auc": 1.0}}
    assert final_bias_metric(1.0, perfect) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        final_bias_metric(0.8, {})


def test_counterfactual_flip_rate():
    assert counterfactual_flip_rate([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)
    assert counterfactual_flip_rate(["remove", "allow"], ["remove", "allow"]) == 0.0
    with pytest.raises(ValueError):
        counterfactual_flip_rate([1, 0], [1])
    with pytest.raises(ValueError):
        counterfactual_flip_rate([], [])


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="lengths differ"):
        subgroup_auc(Y, S[:-1], MASK)
    with pytest.raises(ValueError, match="labels"):
        subgroup_auc(Y * 2, S, MASK)
    with pytest.raises(ValueError, match="NaN"):
        subgroup_auc(Y, np.full(8, np.nan), MASK)
