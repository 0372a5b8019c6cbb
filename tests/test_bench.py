"""The benchmark harness: timing statistics, results files, the machine fingerprint."""

import json

import pytest

from shared.bench import machine_fingerprint, time_fn, write_results

FINGERPRINT_KEYS = {
    "cpu_model",
    "cores",
    "cores_logical",
    "threads",
    "python",
    "platform",
    "torch",
    "onnxruntime",
    "numpy",
    "cuda",
    "matmul_gflops",
    "matmul_size",
    "matmul_threads",
    "memcpy_gbps",
}


def test_time_fn_ordered_percentiles_and_counts():
    calls = []

    def work():
        calls.append(1)
        return sum(range(2000))

    t = time_fn(work, warmup=2, repeats=25, items_per_call=10)
    assert t.n == 25 and len(calls) == 27  # warm-up calls are not timed
    assert 0 < t.min_ms <= t.p50_ms <= t.p95_ms <= t.p99_ms <= t.max_ms
    assert t.median_s == pytest.approx(t.p50_ms / 1e3)
    assert t.items_per_s == pytest.approx(10 / t.median_s)
    assert set(t.to_dict()) >= {"median_s", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "n"}


def test_time_fn_min_time_extends_repeats():
    t = time_fn(lambda: sum(range(200)), warmup=0, repeats=3, min_time_s=0.02)
    assert t.n > 3


def test_fingerprint_keys_without_measuring():
    fp = machine_fingerprint(measure=False)
    assert set(fp) == FINGERPRINT_KEYS
    assert fp["cores"] >= 1 and fp["threads"] >= 1 and fp["torch"]


def test_write_results_json_and_markdown(tmp_path):
    rows = [
        {"batch": 1, "tokens_per_s": 1234.7, "p50_ms": 0.81},
        {"batch": 64, "tokens_per_s": 6170.25, "p50_ms": float("nan"), "note": "int8"},
    ]
    fp = machine_fingerprint(measure=False)
    path = write_results(tmp_path, "rnn", rows, {"speedup": 5.0}, fingerprint=fp)
    assert path == tmp_path / "rnn.json"
    doc = json.loads(path.read_text())
    assert doc["name"] == "rnn" and doc["summary"] == {"speedup": 5.0}
    assert doc["rows"][1]["p50_ms"] is None  # NaN is not valid JSON
    assert set(doc["fingerprint"]) == FINGERPRINT_KEYS
    md = (tmp_path / "rnn.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[0] == "| batch | tokens_per_s | p50_ms | note |"
    assert len(lines) == 4 and "int8" in lines[3] and "1,235" in lines[2]

    write_results(tmp_path, "cols", rows, {}, columns=["batch", "note"], fingerprint=fp)
    assert "| batch | note |" in (tmp_path / "cols.md").read_text()
