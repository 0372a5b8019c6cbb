"""Cohort evaluation: bootstrap intervals, the cohort table and worst examples."""

from __future__ import annotations

import numpy as np
import pytest

from shared.cohorts import (
    bootstrap_ci,
    cohort_markdown,
    cohort_table,
    ratio_ci,
    worst_examples,
)


def test_bootstrap_ci_contains_the_point_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 100)
    large = rng.normal(1.0, 1.0, 10_000)
    p, lo, hi = bootstrap_ci(small, seed=1)
    assert lo < p < hi and p == pytest.approx(small.mean())
    p2, lo2, hi2 = bootstrap_ci(large, seed=1)
    assert lo2 < p2 < hi2 and (hi2 - lo2) < (hi - lo) / 5
    # 95% normal interval of the mean: about +-1.96 / sqrt(n)
    assert hi2 - lo2 == pytest.approx(2 * 1.96 / 100, rel=0.15)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)


def test_bootstrap_ci_edges_and_custom_stat():
    assert all(np.isnan(bootstrap_ci([])))
    assert bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)
    assert bootstrap_ci([1.0, np.nan, 1.0]) == (1.0, 1.0, 1.0)
    p, lo, hi = bootstrap_ci(np.arange(101.0), stat=lambda x: float(np.max(x)), n_boot=50)
    assert p == 100.0 and hi == 100.0 and lo <= hi
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], alpha=1.5)


def test_ratio_ci_is_paired():
    rng = np.random.default_rng(0)
    base = (rng.random(20_000) < 0.2).astype(float)
    same = base.copy()
    p, lo, hi = ratio_ci(same, base)
    assert p == lo == hi == 1.0  # identical per-example values: every resample gives 1
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 400, replace=False)] = 1.0  # 400 more hits
    p, lo, hi = ratio_ci(better, base, seed=1)
    assert p == pytest.approx(better.mean() / base.mean())
    assert 1.0 < lo < p < hi  # paired: the 10% gain is clear although each mean has +-3%
    # Unpaired, the same two samples' intervals overlap; the paired one is much narrower.
    _, lo_b, hi_b = bootstrap_ci(base, seed=1)
    _, lo_a, hi_a = bootstrap_ci(better, seed=1)
    assert (hi - lo) < ((hi_a / lo_b) - (lo_a / hi_b)) / 2
    assert all(np.isnan(ratio_ci([1.0, 0.0], [0.0, 0.0])))
    with pytest.raises(ValueError):
        ratio_ci([1.0, 0.0], [1.0])


def test_cohort_table_and_markdown():
    hit = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=float)
    loss = np.arange(8, dtype=float)
    new = np.array([True, True, True, True, False, False, False, False])
    cohorts = {"all": np.ones(8, bool), "new_users": new, "empty": np.zeros(8, bool)}
    table = cohort_table({"hit@1": hit, "loss": loss}, cohorts, n_boot=200)
    assert table["all"]["hit@1"]["mean"] == pytest.approx(5 / 8)
    assert table["new_users"]["hit@1"]["mean"] == pytest.approx(0.5)
    assert table["new_users"]["loss"]["n"] == 4
    cell = table["new_users"]["loss"]
    assert cell["low"] <= cell["mean"] <= cell["high"]
    assert table["empty"]["loss"]["n"] == 0 and np.isnan(table["empty"]["loss"]["mean"])
    md = cohort_markdown(table)
    assert md.splitlines()[0] == "| cohort | n | hit@1 | loss |"
    assert "| new_users | 4 | 0.5 [" in md and "| empty | 0 | n/a | n/a |" in md
    with pytest.raises(ValueError, match="boolean"):
        cohort_table({"loss": loss}, {"bad": np.arange(8)})
    with pytest.raises(ValueError, match="rows"):
        cohort_table({"loss": loss}, {"short": np.ones(3, bool)})


def test_worst_examples():
    losses = np.array([0.1, 5.0, np.nan, 3.0, 5.0, 0.2])
    assert worst_examples(losses, k=3).tolist() == [1, 4, 3]  # ties keep index order
    mask = np.array([True, False, True, True, False, True])
    assert worst_examples(losses, k=10, mask=mask).tolist() == [3, 5, 0]
    assert worst_examples(losses, k=0).size == 0
