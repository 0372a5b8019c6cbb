"""The review queue: the priority formula, the reach model, and priority beating FIFO."""

import math

import numpy as np
import pytest

from cases.content_moderation.review import (
    capacity_items,
    compare_orders,
    priority,
    queue_markdown,
    simulate_review_queue,
)


def test_priority_is_severity_times_reach_times_p():
    assert priority(0.5, 3.0, 1000.0) == pytest.approx(1500.0)
    assert priority([0.1, 1.0], [1, 2], [10, 10]).tolist() == pytest.approx([1.0, 20.0])
    with pytest.raises(ValueError):
        priority(1.5, 1, 1)
    assert capacity_items(2.0, 60) == 120
    assert capacity_items(0.5, 45) == 22


def test_priority_beats_fifo_where_it_must():
    # Two low-reach, probably-benign items arrive first; two high-reach violations after them.
    # One reviewer decision a day: FIFO spends it on the first benign item, priority on the
    # violation that will be seen most.
    p = [0.1, 0.2, 0.9, 0.8]
    severity = [1, 1, 3, 3]
    reach = [10, 10, 5_000, 1_000]
    y = [0, 0, 1, 1]
    arrival = [0.0, 0.1, 0.2, 0.3]
    prio = simulate_review_queue(p, severity, reach, y, 2, "priority", arrival, days=1)
    fifo = simulate_review_queue(p, severity, reach, y, 2, "fifo", arrival, days=1)
    # Decisions at t = 0.25 and 0.75. FIFO reviews items 0 and 1: nothing prevented.
    assert fifo["violations_caught"] == 0 and fifo["harmful_views_prevented"] == 0
    # Priority: at 0.25 only items 0-2 have arrived -> item 2; at 0.75 item 3.
    expected = 5_000 * math.exp(-0.05 / 0.5) + 1_000 * math.exp(-0.45 / 0.5)
    assert prio["harmful_views_prevented"] == pytest.approx(expected)
    assert prio["violations_caught"] == 2 and prio["precision"] == 1.0
    assert prio["share_of_violations_caught"] == 1.0
    assert prio["harmful_views_total"] == 6_000
    assert prio["severity_weighted_prevented"] == pytest.approx(3 * expected)
    assert prio["median_hours_to_removal"] == pytest.approx(24 * (0.05 + 0.45) / 2)


def test_batch_queue_reviews_capacity_items_in_key_order():
    rng = np.random.default_rng(0)
    n = 500
    y = rng.random(n) < 0.2
    p = np.clip(np.where(y, 0.7, 0.2) + rng.normal(0, 0.15, n), 0, 1)
    reach = rng.lognormal(5, 1.5, n)  # heavy-tailed, like follower counts
    severity = rng.choice([1.0, 3.0], n)
    out = compare_orders(p, severity, reach, y, 50)
    assert all(m["items_reviewed"] == 50 for m in out.values())
    assert out["priority"]["harmful_views_prevented"] > out["fifo"]["harmful_views_prevented"]
    assert (
        out["priority"]["severity_weighted_prevented"]
        >= (out["score"]["severity_weighted_prevented"])
    )
    assert out["score"]["precision"] > out["fifo"]["precision"]  # p alone finds violations
    assert out["priority"]["daily"][0]["reviewed"] == 50
    md = queue_markdown(out)
    assert md.count("\n") == 4 and "| priority |" in md


def test_day_by_day_queue_with_arrivals():
    rng = np.random.default_rng(1)
    n = 300
    arrival = np.sort(rng.uniform(0, 3, n))  # three days of posts
    y = rng.random(n) < 0.3
    p = np.where(y, 0.8, 0.2)
    out = simulate_review_queue(p, 1.0, 100.0, y, 40, "priority", arrival)
    assert out["days"] == 4 and len(out["daily"]) == 4
    assert sum(d["reviewed"] for d in out["daily"]) == out["items_reviewed"] <= 160
    # A reviewed item is never reviewed before it arrives, so every prevented share is <= 1.
    assert 0 < out["share_of_harmful_views_prevented"] <= 1
    # More capacity never prevents less.
    more = simulate_review_queue(p, 1.0, 100.0, y, 80, "priority", arrival)
    assert more["harmful_views_prevented"] >= out["harmful_views_prevented"]


def test_edge_cases():
    out = simulate_review_queue([0.5], [1], [10], [1], 0)
    assert out["items_reviewed"] == 0 and out["harmful_views_prevented"] == 0
    assert math.isnan(out["precision"])
    with pytest.raises(ValueError, match="order"):
        simulate_review_queue([0.5], [1], [10], [1], 1, order="random")
    with pytest.raises(ValueError, match="length"):
        simulate_review_queue([0.5, 0.2], [1], [10], [1], 1)
