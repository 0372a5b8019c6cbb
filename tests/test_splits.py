"""Splitters: disjoint parts that cover every row, with each split's own guarantee.

Also the seeded synthetic-data helpers (shared/synth.py) that the splitters are fed with.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.splits import group_split, leave_last_out, random_split, time_cut_split
from shared.synth import power_law_weights


def assert_partition(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n
    assert joined.min() == 0 and joined.max() == n - 1


def test_random_split_is_a_seeded_partition():
    parts = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [800, 100, 100]
    assert_partition(parts, 1000)
    again = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(parts[1], random_split(1000, seed=4)[1])


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (1.2, -0.2), ()])
def test_random_split_refuses_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        random_split(10, fractions)


def test_time_cut_split_orders_parts_in_time():
    rng = np.random.default_rng(0)
    t = rng.permutation(1000).astype(float)
    train, val, test = time_cut_split(t, (0.8, 0.9))
    assert [len(train), len(val), len(test)] == [800, 100, 100]
    assert_partition((train, val, test), 1000)
    assert t[train].max() < t[val].min() and t[val].max() < t[test].min()


def test_time_cut_split_keeps_ties_together():
    t = np.repeat(np.arange(10), 10)  # 10 rows per time step
    train, val, test = time_cut_split(t, (0.75, 0.9))
    assert_partition((train, val, test), 100)
    for a, b in ((train, val), (val, test)):
        assert not set(t[a]) & set(t[b])
    with pytest.raises(ValueError):
        time_cut_split([])


def test_leave_last_out_puts_each_users_last_event_in_test():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 50, 2000)
    ts = rng.integers(0, 10_000, 2000)
    train, val, test = leave_last_out(users, ts, n_holdout=2)
    assert_partition((train, val, test), 2000)
    for u in np.unique(users):
        rows = np.flatnonzero(users == u)
        if len(rows) < 3:
            assert set(rows) <= set(train)
            continue
        last = rows[np.lexsort((rows, ts[rows]))]  # by time, ties by row order
        assert set(test) & set(rows) == {last[-1]}
        assert set(val) & set(rows) == {last[-2]}
    assert len(np.unique(users[test])) == len(test)


def test_leave_last_out_small_users_and_ties():
    users = np.array([1, 1, 1, 2, 2, 3, 3, 3])
    ts = np.array([5, 5, 1, 1, 2, 0, 9, 9])
    train, val, test = leave_last_out(users, ts)
    assert test.tolist() == [1, 7]  # ties at the last time: the later row is the last event
    assert val.tolist() == [0, 6]
    assert train.tolist() == [2, 3, 4, 5]  # user 2 has two events: all in train
    train, val, test = leave_last_out(users, ts, n_holdout=1)
    assert val.size == 0 and test.tolist() == [1, 4, 7]


def test_group_split_never_straddles():
    groups = np.random.default_rng(2).integers(0, 97, 3000)
    parts = group_split(groups, (0.7, 0.15, 0.15), seed=0)
    assert_partition(parts, 3000)
    seen = [set(groups[p]) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert [len(s) for s in seen] == [68, 14, 15]  # cuts at round(97 * 0.7), round(97 * 0.85)


def test_power_law_weights():
    w = power_law_weights(100, 1.0)
    assert w.sum() == pytest.approx(1.0) and w[0] / w[9] == pytest.approx(10.0)
    assert power_law_weights(5, 0.0) == pytest.approx(np.full(5, 0.2))
    with pytest.raises(ValueError):
        power_law_weights(0, 1.0)
