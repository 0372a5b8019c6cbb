"""A small cost model that maps serving measurements and metric changes to product terms.

Both functions are back-of-the-envelope arithmetic with every assumption an argument, so a README
can show the formula, the inputs and the result side by side.
"""

from __future__ import annotations

import math

HOURS_PER_MONTH = 730.0  # 365 * 24 / 12


def serving_cost(
    qps: float,
    p50_latency_ms: float,
    cores_per_replica: int = 1,
    usd_per_core_hour: float = 0.04,
    headroom: float = 2.0,
) -> dict:
    """Replicas, cores and dollars to serve `qps` when one replica handles one request at a time.

    One replica serves 1000 / p50_latency_ms requests per second (pass the per-request latency
    measured at the batch size you serve with, so batching is included). Then
    replicas = ceil(qps * headroom / per_replica_rps), cores = replicas * cores_per_replica,
    usd_per_hour = cores * usd_per_core_hour, usd_per_million_requests = usd_per_hour /
    (qps * 3600) * 1e6. `headroom` covers peaks and the p50-to-tail gap (2.0 = run at half load).
    The default $0.04 per core-hour is roughly an on-demand cloud vCPU.

    Raises:
        ValueError: qps < 0, or a latency, core count, price or headroom that is not positive
            (headroom must be >= 1).
    """
    if qps < 0 or p50_latency_ms <= 0 or cores_per_replica < 1 or usd_per_core_hour < 0:
        raise ValueError(
            "serving_cost needs qps >= 0, p50_latency_ms > 0, cores_per_replica >= 1, "
            "usd_per_core_hour >= 0"
        )
    if headroom < 1:
        raise ValueError(f"serving_cost needs headroom >= 1, got {headroom}")
    per_replica_rps = 1000.0 / p50_latency_ms
    replicas = max(1, math.ceil(qps * headroom / per_replica_rps)) if qps > 0 else 0
    cores = replicas * cores_per_replica
    usd_per_hour = cores * usd_per_core_hour
    per_million = usd_per_hour / (qps * 3600.0) * 1e6 if qps > 0 else float("nan")
    return {
        "qps": float(qps),
        "per_replica_rps": per_replica_rps,
        "replicas": replicas,
        "cores": cores,
        "utilization": qps / (replicas * per_replica_rps) if replicas else 0.0,
        "usd_per_hour": usd_per_hour,
        "usd_per_month": usd_per_hour * HOURS_PER_MONTH,
        "usd_per_million_requests": per_million,
    }
