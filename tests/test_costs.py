"""Cost model: the arithmetic stated in the docstrings."""

from __future__ import annotations

import math

import pytest

from shared.costs import serving_cost


def test_serving_cost_closed_form():
    # 10 ms per request -> 100 req/s per replica; 1000 qps with 2x headroom -> 20 replicas
    c = serving_cost(qps=1000, p50_latency_ms=10, cores_per_replica=2, usd_per_core_hour=0.05)
    assert c["per_replica_rps"] == pytest.approx(100.0)
    assert c["replicas"] == 20 and c["cores"] == 40
    assert c["usd_per_hour"] == pytest.approx(2.0)
    assert c["usd_per_month"] == pytest.approx(2.0 * 730)
    assert c["usd_per_million_requests"] == pytest.approx(2.0 / 3.6)
    assert c["utilization"] == pytest.approx(0.5)


def test_serving_cost_rounds_replicas_up_and_handles_zero_load():
    assert serving_cost(qps=1, p50_latency_ms=1)["replicas"] == 1
    assert serving_cost(qps=150, p50_latency_ms=10, headroom=1.0)["replicas"] == 2
    idle = serving_cost(qps=0, p50_latency_ms=5)
    assert idle["replicas"] == 0 and math.isnan(idle["usd_per_million_requests"])
    with pytest.raises(ValueError):
        serving_cost(qps=10, p50_latency_ms=0)
    with pytest.raises(ValueError, match="headroom"):
        serving_cost(qps=10, p50_latency_ms=5, headroom=0.5)
