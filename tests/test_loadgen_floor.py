"""shared.floor's protocol pieces and shared.bench.paired_ratios (no Ray: the floor app itself is
served in tests/test_benchmarks.py and the video case's load test)."""

import math
import os
import subprocess
import sys
import time

import pytest

from shared.bench import paired_ratios
from shared.floor import alternate, floor_multiples, free_port_run, tree_cpu_s
from shared.serving import port_is_free


def test_alternate_rotates_the_order_and_pairs_repeats():
    calls = []
    runs = alternate({v: (lambda v=v: calls.append(v) or len(calls)) for v in "abc"}, 3)
    assert calls == list("abcbcacab")
    assert runs == {"a": [1, 6, 8], "b": [2, 4, 9], "c": [3, 5, 7]}
    with pytest.raises(ValueError):
        alternate({"a": lambda: 1}, 0)


def test_floor_multiples():
    case = {"p50_ms": 6.0, "p99_ms": 30.0, "cpu_ms_per_request": 3.0, "rps": 100.0}
    floor = {"p50_ms": 2.0, "p99_ms": 10.0, "cpu_ms_per_request": 1.5, "rps": 400.0}
    assert floor_multiples(case, floor) == {"p50_x": 3.0, "p99_x": 3.0, "cpu_x": 2.0, "rps_x": 0.25}
    out = floor_multiples(case, {**floor, "p99_ms": 0.0, "cpu_ms_per_request": None})
    assert math.isnan(out["p99_x"]) and math.isnan(out["cpu_x"]) and out["p50_x"] == 3.0


def test_paired_ratios_median_range_and_interval():
    r = paired_ratios([2.0, 3.0, 4.0, 6.0, 3.0], [1.0, 1.0, 2.0, 2.0, 1.0])  # ratios 2 3 2 3 3
    assert r["median"] == 3.0 and r["min"] == 2.0 and r["max"] == 3.0 and r["n"] == 5
    assert r["min"] <= r["lo"] <= r["median"] <= r["hi"] <= r["max"]
    two = paired_ratios([2.0, 6.0], [1.0, 2.0])  # below 3 repeats the interval is the range
    assert (two["lo"], two["hi"], two["median"]) == (2.0, 3.0, 2.5)
    skip = paired_ratios([1.0, 2.0], [0.0, 1.0])  # a zero denominator is left out
    assert skip["n"] == 1 and skip["median"] == 2.0
    assert math.isnan(paired_ratios([1.0], [0.0])["median"])
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_tree_cpu_counts_child_processes():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    before = tree_cpu_s()
    child = subprocess.Popen([sys.executable, "-c", busy + "time.sleep(5)"])
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_s() - before < 0.25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_cpu_s() - before >= 0.25  # the child's spin counts while it is alive
    finally:
        child.kill()
        child.wait()


def test_free_port_run_finds_consecutive_free_ports():
    p = free_port_run(3)
    assert all(port_is_free("127.0.0.1", q) for q in range(p, p + 3))
