"""Ranking metrics: a perfect ranking scores 1, disjoint lists 0, and the closed forms between."""

from __future__ import annotations

import numpy as np
import pytest

from shared.ranking import (
    catalog_coverage,
    gini,
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    recall_at_k,
)

RANKED = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k, hit_rate_at_k])
def test_perfect_is_one_disjoint_is_zero(metric):
    perfect = [{0, 1}, {4, 5}]
    assert metric(RANKED, perfect, 2) == pytest.approx(1.0)
    assert metric(RANKED, [{8}, {9}], 4) == 0.0


def test_mrr_limits_and_closed_form():
    assert mrr(RANKED, [{0}, {4}]) == 1.0
    assert mrr(RANKED, [{8}, {9}]) == 0.0
    assert mrr(RANKED, [{2}, {5, 7}]) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_closed_form_values():
    rel = [{1, 3, 9}, {4}]
    # user 0: hits at positions 1 and 3 of 4; three relevant items
    assert recall_at_k(RANKED, rel, 4, reduce="none") == pytest.approx([2 / 3, 1.0])
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_k(RANKED, rel, 4, reduce="none") == pytest.approx([dcg / idcg, 1.0])
    assert hit_rate_at_k(RANKED, rel, 1) == pytest.approx(0.5)


def test_single_held_out_item_per_user():
    held_out = np.array([1, 7])  # leave-one-out: one relevant id per user
    assert hit_rate_at_k(RANKED, held_out, 2, reduce="none") == pytest.approx([1.0, 0.0])
    assert mrr(RANKED, held_out) == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_users_without_relevant_items_are_nan_and_skipped():
    rel = [{0}, set()]
    per_user = recall_at_k(RANKED, rel, 2, reduce="none")
    assert per_user[0] == 1.0 and np.isnan(per_user[1])
    assert recall_at_k(RANKED, rel, 2) == 1.0
    with pytest.raises(ValueError, match="no user"):
        ndcg_at_k(RANKED, [set(), set()], 2)


def test_short_lists_and_bad_k():
    ragged = [[0, 1, 2], [4]]
    assert recall_at_k(ragged, [{2}, {4}], 3, reduce="none") == pytest.approx([1.0, 1.0])
    assert hit_rate_at_k(ragged, [{2}, {4}], 3, reduce="none") == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="larger than the longest"):
        recall_at_k(RANKED, [{0}, {4}], 5)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(RANKED, [{0}, {4}], 0)
    with pytest.raises(ValueError, match="relevant sets"):
        mrr(RANKED, [{0}])
    with pytest.raises(ValueError, match="reduce"):
        mrr(RANKED, [{0}, {4}], reduce="sum")


def test_catalog_coverage():
    assert catalog_coverage(RANKED, n_items=10, k=2) == pytest.approx(0.4)
    assert catalog_coverage(RANKED, n_items=8, k=4) == 1.0
    assert catalog_coverage([[1, 2], [1, 2]], n_items=10, k=2) == pytest.approx(0.2)


def test_gini_equal_is_zero_and_concentrated_is_near_one():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 10]) == pytest.approx(3 / 4)  # (n - 1) / n
    assert gini([1, 2, 3]) == pytest.approx(2 / 9)  # sum((2i - n - 1) x_i) / (n sum x) = 4 / 18
    with pytest.raises(ValueError):
        gini([0, 0])
    with pytest.raises(ValueError):
        gini([1, -1])
