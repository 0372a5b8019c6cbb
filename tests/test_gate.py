"""The data gate: a clean batch passes, each kind of corruption is caught and named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.gate import (
    ColumnSpec,
    GateThresholds,
    Reference,
    Schema,
    build_reference,
    check_batch,
    quarantine,
)

SCHEMA = Schema(
    columns={
        "user_id": ColumnSpec("category"),
        "item_id": ColumnSpec("category"),
        "ts": ColumnSpec("int", min=0),
        "device": ColumnSpec("category"),
        "watch_s": ColumnSpec("float", min=0, max=3600),
        "click": ColumnSpec("int", min=0, max=1),
    },
    target="click",
    key=("user_id", "item_id", "ts"),
)


def make_batch(seed: int, n: int = 4000, t0: int = 0) -> dict[str, np.ndarray]:
    """Watch logs: 400 users, 300 items (Zipf-ish), three devices, lognormal watch time."""
    rng = np.random.default_rng(seed)
    items = np.minimum(rng.zipf(1.3, n) - 1, 299)
    watch = np.clip(rng.lognormal(3.5, 1.0, n), 0, 3600)
    return {
        "user_id": np.array([f"u{u}" for u in rng.integers(0, 400, n)]),
        "item_id": items.astype(np.int64),
        "ts": t0 + np.sort(rng.choice(10 * n, n, replace=False)).astype(np.int64),
        "device": rng.choice(np.array(["android", "ios", "web"]), n, p=[0.5, 0.3, 0.2]),
        "watch_s": watch,
        "click": (rng.random(n) < 0.1 + 0.2 * (watch > 60)).astype(np.int64),
    }


@pytest.fixture(scope="module")
def reference() -> Reference:
    return build_reference(make_batch(0), SCHEMA)


def failed(result) -> set[tuple[str, str | None]]:
    return {(c.name, c.column) for c in result.failed}


def test_clean_batch_from_the_same_generator_passes(reference):
    result = check_batch(make_batch(1, t0=10**6), SCHEMA, reference)
    assert result.passed, result.report()
    assert result.report().startswith("data gate: PASS")
    names = {c.name for c in result.checks}
    assert {"dtype", "missing_rate", "out_of_range", "unseen_rate", "psi", "category_js"} <= names
    assert {"top_value_share", "target_js", "duplicate_rate", "volume"} <= names


def test_reference_round_trips_through_json(reference):
    again = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert check_batch(make_batch(1), SCHEMA, again).passed


def test_duplicated_events_are_caught(reference):
    b = make_batch(1)
    idx = np.r_[np.arange(4000), np.arange(400)]  # 10% of rows logged twice
    dup = {k: v[idx] for k, v in b.items()}
    result = check_batch(dup, SCHEMA, reference)
    assert ("duplicate_rate", "user_id,item_id,ts") in failed(result)
    check = next(c for c in result.checks if c.name == "duplicate_rate")
    assert check.value == pytest.approx(400 / 4400)


def test_bot_flood_one_user_dominating_is_caught(reference):
    b = make_batch(1)
    n_bot = 3000
    rng = np.random.default_rng(7)
    bot = {
        "user_id": np.full(n_bot, "u7"),
        "item_id": rng.integers(0, 300, n_bot),
        "ts": np.arange(n_bot, dtype=np.int64) + 10**7,
        "device": np.full(n_bot, "web"),
        "watch_s": rng.uniform(1, 5, n_bot),
        "click": np.ones(n_bot, dtype=np.int64),
    }
    flood = {k: np.concatenate([b[k], bot[k]]) for k in b}
    got = failed(check_batch(flood, SCHEMA, reference))
    assert ("top_value_share", "user_id") in got
    assert ("target_js", "click") in got


def test_volume_spike_and_drop_are_caught(reference):
    big = make_batch(2, n=4000 * 6)
    assert ("volume", None) in failed(check_batch(big, SCHEMA, reference))
    small = make_batch(3, n=400)
    assert ("volume", None) in failed(check_batch(small, SCHEMA, reference))
    assert check_batch(small, SCHEMA, reference, GateThresholds(volume_ratio=(0.05, 5))).passed


def test_all_zero_column_is_a_distribution_shift(reference):
    b = make_batch(1)
    b["watch_s"] = np.zeros_like(b["watch_s"])
    result = check_batch(b, SCHEMA, reference)
    assert ("psi", "watch_s") in failed(result)
    assert "FAIL psi[watch_s]" in result.report()


def test_schema_drift_missing_new_and_retyped_columns(reference):
    b = make_batch(1)
    del b["device"]
    b["country"] = np.full(4000, "fr")
    b["watch_s"] = b["watch_s"].astype(str)  # a float column arriving as text
    got = failed(check_batch(b, SCHEMA, reference))
    assert {("column_missing", "device"), ("column_unexpected", "country")} <= got
    assert ("dtype", "watch_s") in got


def test_ragged_columns_fail_without_raising(reference):
    b = make_batch(1)
    b["click"] = b["click"][:-5]
    result = check_batch(b, SCHEMA, reference)
    assert ("column_length", None) in failed(result)


def test_out_of_range_values_are_caught(reference):
    b = make_batch(1)
    b["click"][:10] = 2
    b["watch_s"][:3] = -1.0
    got = failed(check_batch(b, SCHEMA, reference))
    assert {("out_of_range", "click"), ("out_of_range", "watch_s")} <= got


def test_nans_in_a_non_nullable_column_are_caught(reference):
    b = make_batch(1)
    b["watch_s"][::50] = np.nan
    result = check_batch(b, SCHEMA, reference)
    check = next(c for c in result.checks if c.name == "missing_rate" and c.column == "watch_s")
    assert not check.passed and check.value == pytest.approx(0.02)


def test_nullable_column_tolerates_its_reference_missing_rate():
    schema = Schema({"x": ColumnSpec("float", nullable=True)})
    rng = np.random.default_rng(0)
    ref_batch = {"x": np.where(rng.random(2000) < 0.1, np.nan, rng.normal(size=2000))}
    ref = build_reference(ref_batch, schema)
    ok = {"x": np.where(rng.random(2000) < 0.1, np.nan, rng.normal(size=2000))}
    bad = {"x": np.where(rng.random(2000) < 0.5, np.nan, rng.normal(size=2000))}
    assert check_batch(ok, schema, ref).passed
    assert ("missing_rate", "x") in failed(check_batch(bad, schema, ref))


def test_unseen_categories_are_caught(reference):
    b = make_batch(1)
    b["device"][:1000] = "tv"  # the column is <U7: a longer value would be cut
    result = check_batch(b, SCHEMA, reference)
    assert ("unseen_rate", "device") in failed(result)
    assert "(e.g. tv)" in result.report()


def test_quarantine_writes_npz_and_report(tmp_path, reference):
    b = make_batch(1)
    b["watch_s"] = np.zeros_like(b["watch_s"])
    b["note"] = np.array(["x", None] * 2000, dtype=object)  # object column, not in schema
    result = check_batch(b, SCHEMA, reference)
    path = quarantine(b, result, tmp_path / "q")
    assert path.suffix == ".npz" and path.exists()
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["watch_s"], b["watch_s"])
        np.testing.assert_array_equal(z["user_id"], b["user_id"])
        assert z["note"].dtype.kind == "U" and z["note__isnull"].sum() == 2000
    report = path.with_suffix(".txt").read_text()
    assert "QUARANTINE" in report and "psi[watch_s]" in report
    assert json.loads(path.with_suffix(".json").read_text())["passed"] is False
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_continuous_target_is_compared_on_reference_bins():
    schema = Schema({"x": ColumnSpec("float"), "y": ColumnSpec("float", min=0)}, target="y")
    rng = np.random.default_rng(0)
    ref = build_reference({"x": rng.normal(size=3000), "y": rng.exponential(1.0, 3000)}, schema)
    assert ref.target["mode"] == "binned"
    ok = {"x": rng.normal(size=3000), "y": rng.exponential(1.0, 3000)}
    shifted = {"x": rng.normal(size=3000), "y": rng.exponential(4.0, 3000)}
    assert check_batch(ok, schema, ref).passed
    assert ("target_js", "y") in failed(check_batch(shifted, schema, ref))
