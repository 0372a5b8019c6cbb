"""The data gate: check each incoming batch of log rows before it reaches training or evaluation.

A batch is a dict of equal-length numpy columns. `build_reference` profiles a known-good batch;
`check_batch` compares a new batch against the schema and that profile and returns a `GateResult`
that passes or names every failed check with its value and limit; `quarantine` writes a refused
batch and its report aside, atomically, for a person to look at.

    schema = Schema(
        columns={"user_id": ColumnSpec("category"), "item_id": ColumnSpec("category"),
                 "ts": ColumnSpec("int", min=0), "watch_s": ColumnSpec("float", min=0),
                 "click": ColumnSpec("int", min=0, max=1)},
        target="click", key=("user_id", "item_id", "ts"))
    reference = build_reference(good_batch, schema)
    result = check_batch(new_batch, schema, reference)
    if not result.passed:
        quarantine(new_batch, result, "runs/quarantine")

Checks, in order (a schema failure on a column skips the later checks on that column):
    batch_type / column_missing / column_unexpected / column_length   the schema itself
    dtype            the column's values fit its kind ("int", "float", "category", "str")
    missing_rate     None / NaN (and "" in category columns); limit 0 unless the column is
                     nullable, then reference rate + max_missing_rate
    out_of_range     share of values outside [min, max] or non-finite; limit 0
    unseen_rate      share of category values never seen in the reference
    top_value_share  share of the single most frequent value of a category column, key columns
                     included (a bot flood); limit max(max_top_share_ratio * reference share,
                     0.02), capped at 1
    psi              numeric shift, PSI on the reference's quantile bins
    category_js      shift of a low-cardinality (<= 50 values) category column, JS in bits
    target_js        shift of the target distribution, JS in bits
    duplicate_rate   1 - distinct key tuples / rows (only when the schema has a key); limit
                     reference rate + max_duplicate_rate, so a dataset whose every part repeats
                     itself (spam campaigns) passes and a retried batch does not
    volume           rows / reference rows, inside volume_ratio
Key columns (ids, timestamps) are exempt from the shift checks (psi, category_js): their
distribution is expected to move. `drift=False` exempts a column from psi, category_js and
top_value_share (a column that is naturally dominated by one value).
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shared.drift import (
    bin_proportions,
    js_divergence,
    psi_from_proportions,
    quantile_edges,
)
from shared.io import atomic_write_bytes, atomic_write_json, atomic_write_text

KINDS = ("int", "float", "category", "str")
PSI_BINS = 10
# Category columns with at most this many reference values get the category_js shift check;
# above it a batch's empirical distribution is too noisy to compare (ids).
LOW_CARDINALITY = 50
# A numeric target with at most this many distinct reference values is compared as categories.
DISCRETE_TARGET_MAX = 20
# Floor for the top_value_share limit, so a normal heavy user in a small batch does not trip it.
TOP_SHARE_FLOOR = 0.02


@dataclass
class ColumnSpec:
    """One column: its kind, an optional inclusive [min, max] range and whether it may be missing.

    kind: "int" (integer values; a float column of whole numbers is accepted), "float", "category"
    (ints or strings from a finite set), "str" (free text). `drift=False` exempts the column from
    the distribution-shift checks.
    """

    kind: str
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    drift: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ColumnSpec kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class Schema:
    """Columns by name, the optional target column and the key columns that identify a row."""

    columns: dict[str, ColumnSpec]
    target: str | None = None
    key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.key = tuple(self.key)
        for name in (*self.key, *([self.target] if self.target else [])):
            if name not in self.columns:
                raise ValueError(f"Schema: {name!r} is a key or target but not a column")


@dataclass
class GateThresholds:
    """Limits for the checks; defaults are deliberately loose for small batches.

    max_psi 0.25 is the usual "significant shift" line for PSI; JS limits are in bits.
    """

    max_missing_rate: float = 0.01
    max_unseen_rate: float = 0.05
    max_psi: float = 0.25
    max_target_js: float = 0.1
    max_duplicate_rate: float = 0.02
    volume_ratio: tuple[float, float] = (0.2, 5.0)
    max_category_js: float = 0.1
    max_top_share_ratio: float = 5.0


@dataclass
class Check:
    """One check's outcome: value against limit (a number, a (low, high) pair, or None)."""

    name: str
    column: str | None
    value: Any
    limit: Any
    passed: bool
    message: str


@dataclass
class GateResult:
    """All checks run on one batch; `passed` is True iff every check passed."""

    checks: list[Check] = field(default_factory=list)
    n_rows: int = 0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def report(self) -> str:
        """A readable multi-line report: the verdict, then every failed check, then a tally."""
        failed = self.failed
        verdict = "PASS" if not failed else "QUARANTINE"
        lines = [
            f"data gate: {verdict} ({self.n_rows:,} rows, {len(self.checks)} checks, "
            f"{len(failed)} failed)"
        ]
        for c in failed:
            where = f"[{c.column}]" if c.column else ""
            lines.append(
                f"  FAIL {c.name}{where}: {_fmt(c.value)} (limit {_fmt(c.limit)}) - {c.message}"
            )
        passed_names = sorted({c.name for c in self.checks if c.passed})
        if passed_names:
            lines.append("  passed: " + ", ".join(passed_names))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "n_rows": self.n_rows,
            "checks": [_jsonable(asdict(c)) for c in self.checks],
        }


@dataclass
class Reference:
    """Profile of a known-good batch. JSON-able through `to_dict` / `from_dict`."""

    n_rows: int
    missing_rate: dict[str, float]
    numeric: dict[str, dict[str, list[float]]]  # column -> {"edges", "proportions"}
    categories: dict[str, dict[str, float]]  # column -> {value: share}
    top_share: dict[str, float]  # column -> share of its most frequent value
    target: dict[str, Any] | None  # {"mode": "categorical"|"binned", "distribution", "edges"}
    # 1 - distinct key tuples / rows of the reference batch (None: no key, or an older profile)
    duplicate_rate: float | None = None

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        return cls(**d)


# ----------------------------------------------------------------------------- column helpers


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, (tuple, list)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _is_missing_obj(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _dtype_error(a: np.ndarray, spec: ColumnSpec) -> str | None:
    """None if the array fits the kind, else a one-line reason."""
    k = a.dtype.kind
    if a.ndim != 1:
        return f"expected a 1-D column, got shape {a.shape}"
    if spec.kind == "float":
        return None if k in "iuf" else f"expected numbers, got dtype {a.dtype}"
    if spec.kind == "int":
        if k in "iub":
            return None
        if k == "f":
            finite = a[np.isfinite(a)]
            return None if np.all(finite == np.round(finite)) else "expected whole numbers"
        return f"expected integers, got dtype {a.dtype}"
    if spec.kind == "category":
        if k in "iubUS":
            return None
        if k == "f":
            if np.any(np.isinf(a)):
                return "expected category codes, got infinity"
            finite = a[np.isfinite(a)]
            return None if np.all(finite == np.round(finite)) else "expected category codes"
        if k == "O":
            ok = all(_is_missing_obj(v) or isinstance(v, (str, int, np.integer)) for v in a)
            return None if ok else "expected strings or integer codes"
        return f"expected categories, got dtype {a.dtype}"
    # str
    if k in "US":
        return None
    if k == "O":
        ok = all(_is_missing_obj(v) or isinstance(v, str) for v in a)
        return None if ok else "expected strings"
    return f"expected strings, got dtype {a.dtype}"


def _missing_mask(a: np.ndarray, spec: ColumnSpec) -> np.ndarray:
    k = a.dtype.kind
    if k == "f":
        return np.isnan(a)
    if k == "O":
        m = np.fromiter((_is_missing_obj(v) for v in a), dtype=bool, count=len(a))
        if spec.kind == "category":
            m |= np.fromiter((v == "" for v in a), dtype=bool, count=len(a))
        return m
    if k in "US" and spec.kind == "category":
        return a == a.dtype.type("")
    return np.zeros(len(a), dtype=bool)


def _category_keys(a: np.ndarray) -> np.ndarray:
    """Present (non-missing) values as strings; whole floats as ints so 5.0 and 5 agree."""
    if a.dtype.kind == "f":
        a = a.astype(np.int64)
    if a.dtype.kind == "O":
        return np.array(
            [str(int(v)) if isinstance(v, (int, np.integer)) else str(v) for v in a], dtype=str
        )
    return a.astype(str)


def _distribution(keys: np.ndarray) -> dict[str, float]:
    if len(keys) == 0:
        return {}
    uniq, counts = np.unique(keys, return_counts=True)
    return {str(u): float(c) / len(keys) for u, c in zip(uniq, counts, strict=True)}


def _top_share(keys: np.ndarray) -> float:
    if len(keys) == 0:
        return 0.0
    _, counts = np.unique(keys, return_counts=True)
    return float(counts.max()) / len(keys)


def _target_keys(values: np.ndarray) -> np.ndarray:
    """Target values as category keys; whole floats as ints so 1.0 and 1 agree."""
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        return values.astype(str)
    return _category_keys(values)


def _target_profile(values: np.ndarray, spec: ColumnSpec) -> dict[str, Any]:
    if spec.kind in ("category", "str") or len(np.unique(values)) <= DISCRETE_TARGET_MAX:
        return {
            "mode": "categorical",
            "distribution": _distribution(_target_keys(values)),
            "edges": [],
        }
    edges = quantile_edges(values.astype(np.float64), PSI_BINS)
    props = bin_proportions(values, edges)
    return {
        "mode": "binned",
        "distribution": {str(i): float(p) for i, p in enumerate(props)},
        "edges": edges.tolist(),
    }


def _target_distribution(values: np.ndarray, ref: dict) -> dict[str, float]:
    if ref["mode"] == "categorical":
        return _distribution(_target_keys(values))
    props = bin_proportions(values, np.asarray(ref["edges"], dtype=np.float64))
    return {str(i): float(p) for i, p in enumerate(props)}


def _present(batch: dict, schema: Schema) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """column -> (array, missing mask) for the schema columns in `batch` whose dtype fits."""
    out = {}
    for name, spec in schema.columns.items():
        if name not in batch:
            continue
        a = np.asarray(batch[name])
        if _dtype_error(a, spec) is None:
            out[name] = (a, _missing_mask(a, spec))
    return out


def _numeric_values(a: np.ndarray, miss: np.ndarray) -> np.ndarray:
    v = a[~miss].astype(np.float64)
    return v[np.isfinite(v)]


# ----------------------------------------------------------------------------- public API


def build_reference(batch: dict[str, np.ndarray], schema: Schema) -> Reference:
    """Profile a known-good batch: row count, missing rates, numeric quantile bins, category
    shares, top-value shares and the target distribution.

    Raises:
        ValueError: the batch itself does not fit the schema (run check_batch on it to see why)
            or is empty.
    """
    cols = _present(batch, schema)
    bad = [c for c in schema.columns if c not in cols]
    if bad:
        raise ValueError(f"build_reference: columns missing or of the wrong type: {bad}")
    lengths = {len(a) for a, _ in cols.values()}
    if len(lengths) != 1 or lengths == {0}:
        raise ValueError(f"build_reference needs equal, non-zero column lengths, got {lengths}")
    n = lengths.pop()
    missing, numeric, categories, top = {}, {}, {}, {}
    for name, (a, miss) in cols.items():
        spec = schema.columns[name]
        missing[name] = float(miss.mean())
        if spec.kind in ("int", "float") and name != schema.target:
            v = _numeric_values(a, miss)
            if len(v):
                edges = quantile_edges(v, PSI_BINS)
                numeric[name] = {
                    "edges": edges.tolist(),
                    "proportions": bin_proportions(v, edges).tolist(),
                }
        if spec.kind == "category":
            keys = _category_keys(a[~miss])
            categories[name] = _distribution(keys)
            if spec.drift:
                top[name] = _top_share(keys)
    target = None
    if schema.target is not None and not cols[schema.target][1].all():
        a, miss = cols[schema.target]
        target = _target_profile(a[~miss], schema.columns[schema.target])
    dup = None
    if schema.key and all(c in batch for c in schema.key):
        dup = _duplicate_rate([np.asarray(batch[c]) for c in schema.key])
    return Reference(n, missing, numeric, categories, top, target, dup)


class _Checks(list):
    """The checks run so far, in order; `add` appends one."""

    def add(self, name, column, value, limit, passed, message) -> None:
        self.append(Check(name, column, value, limit, bool(passed), message))


def check_batch(
    batch: dict[str, np.ndarray],
    schema: Schema,
    reference: Reference,
    thresholds: GateThresholds | None = None,
) -> GateResult:
    """Run every check (see the module docstring) and return the result; never raises on bad
    data (a malformed batch is a failed check, not an exception)."""
    th = thresholds or GateThresholds()
    checks = _Checks()
    if not isinstance(batch, dict):
        checks.add(
            "batch_type", None, None, None, False, f"batch is a {type(batch).__name__}, not a dict"
        )
        return GateResult(checks, 0)
    n = _check_schema(batch, schema, checks)
    if n is None:  # unequal column lengths: nothing below is defined
        return GateResult(checks, max(len(np.asarray(v).reshape(-1)) for v in batch.values()))
    # Volume first: it is defined even for an empty batch.
    _check_volume(n, reference, th, checks)
    if n == 0:
        return GateResult(checks, n)
    cols = _present(batch, schema)
    for name, (a, miss) in cols.items():
        spec = schema.columns[name]
        _check_missing(name, miss, spec, reference, th, checks)
        if spec.kind in ("int", "float"):
            _check_range(name, a, miss, spec, checks)
        if spec.kind == "category":
            _check_categories(name, _category_keys(a[~miss]), schema, reference, th, checks)
        drifts = spec.drift and name not in schema.key and name in reference.numeric
        if spec.kind in ("int", "float") and drifts:
            _check_psi(name, _numeric_values(a, miss), reference, th, checks)
    if schema.target is not None and schema.target in cols and reference.target is not None:
        _check_target(schema.target, *cols[schema.target], reference, th, checks)
    _check_duplicates(batch, schema, n, reference, th, checks)
    return GateResult(checks, n)


def _check_schema(batch: dict, schema: Schema, checks: _Checks) -> int | None:
    """Columns present, none unexpected, equal lengths, dtypes. Returns the row count, or None
    when the columns' lengths differ."""
    for name in schema.columns:
        if name not in batch:
            checks.add("column_missing", name, None, None, False, f"column {name!r} is missing")
    for name in batch:
        if name not in schema.columns:
            checks.add(
                "column_unexpected", name, None, None, False, f"column {name!r} is not in schema"
            )
    lengths = {name: len(np.asarray(v).reshape(-1)) for name, v in batch.items()}
    if len(set(lengths.values())) > 1:
        checks.add(
            "column_length",
            None,
            sorted(set(lengths.values())),
            None,
            False,
            f"columns have different lengths: {lengths}",
        )
        return None
    for name, spec in schema.columns.items():
        if name in batch:
            err = _dtype_error(np.asarray(batch[name]), spec)
            dtype = str(np.asarray(batch[name]).dtype)
            checks.add("dtype", name, dtype, spec.kind, err is None, err or "ok")
    return max(lengths.values(), default=0)


def _check_volume(n: int, reference: Reference, th: GateThresholds, checks: _Checks) -> None:
    ratio = n / reference.n_rows
    lo, hi = th.volume_ratio
    checks.add(
        "volume",
        None,
        ratio,
        (lo, hi),
        lo <= ratio <= hi,
        f"{n:,} rows against {reference.n_rows:,} in the reference",
    )


def _check_missing(name, miss, spec, reference, th, checks: _Checks) -> None:
    rate = float(miss.mean())
    limit = reference.missing_rate.get(name, 0.0) + th.max_missing_rate if spec.nullable else 0.0
    checks.add(
        "missing_rate",
        name,
        rate,
        limit,
        rate <= limit,
        f"{int(miss.sum()):,} missing values" + ("" if spec.nullable else " (not nullable)"),
    )


def _check_range(name, a, miss, spec, checks: _Checks) -> None:
    """Numeric values must be finite and inside [spec.min, spec.max]."""
    v = a[~miss].astype(np.float64)
    bad = ~np.isfinite(v)
    if spec.min is not None:
        bad |= v < spec.min
    if spec.max is not None:
        bad |= v > spec.max
    share = float(bad.mean()) if len(v) else 0.0
    seen = f"observed [{np.nanmin(v):.4g}, {np.nanmax(v):.4g}]" if len(v) else "no values"
    checks.add(
        "out_of_range",
        name,
        share,
        0.0,
        share == 0.0,
        f"{int(bad.sum()):,} values outside [{spec.min}, {spec.max}]; {seen}",
    )


def _check_categories(name, keys, schema, reference, th, checks: _Checks) -> None:
    """Unseen values, the distribution's shift (low-cardinality columns), the top value's share."""
    if not len(keys):
        return
    spec = schema.columns[name]
    if name in reference.categories:
        known = reference.categories[name]
        unseen = ~np.isin(keys, np.fromiter(known, dtype=object).astype(str))
        share = float(unseen.mean())
        examples = ", ".join(sorted(set(keys[unseen].tolist()))[:3])
        checks.add(
            "unseen_rate",
            name,
            share,
            th.max_unseen_rate,
            share <= th.max_unseen_rate,
            f"{int(unseen.sum()):,} values not in the reference"
            + (f" (e.g. {examples})" if examples else ""),
        )
        drift_ok = spec.drift and name not in schema.key and name != schema.target
        if drift_ok and len(known) <= LOW_CARDINALITY:
            js = js_divergence(known, _distribution(keys))
            checks.add(
                "category_js",
                name,
                js,
                th.max_category_js,
                js <= th.max_category_js,
                "distribution of values against the reference",
            )
    if name in reference.top_share:
        uniq, counts = np.unique(keys, return_counts=True)
        share = float(counts.max()) / len(keys)
        ref_share = reference.top_share[name]
        limit = min(1.0, max(th.max_top_share_ratio * ref_share, TOP_SHARE_FLOOR))
        checks.add(
            "top_value_share",
            name,
            share,
            limit,
            share <= limit,
            f"value {str(uniq[counts.argmax()])!r} is {share:.1%} of rows "
            f"(reference top {ref_share:.1%})",
        )


def _check_psi(name, v, reference, th, checks: _Checks) -> None:
    """PSI of the numeric values on the reference's quantile bins."""
    if not len(v):
        return
    ref = reference.numeric[name]
    props = bin_proportions(v, np.asarray(ref["edges"], dtype=np.float64))
    value = psi_from_proportions(ref["proportions"], props)
    checks.add(
        "psi",
        name,
        value,
        th.max_psi,
        value <= th.max_psi,
        f"mean {v.mean():.4g}, share of zeros {np.mean(v == 0):.1%}",
    )


def _check_target(name, a, miss, reference, th, checks: _Checks) -> None:
    """JS divergence of the target's distribution against the reference's."""
    if not (~miss).any():
        return
    dist = _target_distribution(a[~miss], reference.target)
    js = js_divergence(reference.target["distribution"], dist)
    checks.add(
        "target_js",
        name,
        js,
        th.max_target_js,
        js <= th.max_target_js,
        "target distribution against the reference "
        + ", ".join(f"{k}: {v:.3f}" for k, v in list(dist.items())[:5]),
    )


def _check_duplicates(batch, schema, n, reference, th, checks: _Checks) -> None:
    key_cols = [c for c in schema.key if c in batch]
    if not key_cols or len(key_cols) != len(schema.key):
        return
    rate = _duplicate_rate([np.asarray(batch[c]) for c in key_cols])
    # Judged against the data's own repetition: the reference's rate plus the allowance.
    limit = min(1.0, (reference.duplicate_rate or 0.0) + th.max_duplicate_rate)
    checks.add(
        "duplicate_rate",
        ",".join(key_cols),
        rate,
        limit,
        rate <= limit,
        f"{round(rate * n):,} repeated rows on {key_cols}",
    )


def _duplicate_rate(columns: list[np.ndarray]) -> float:
    """1 - distinct row tuples / rows over the given columns."""
    n = len(columns[0])
    if n == 0:
        return 0.0
    codes = []
    for a in columns:
        keys = a.astype(str) if a.dtype.kind == "O" else a
        _, inv = np.unique(keys, return_inverse=True)
        codes.append(inv.reshape(-1).astype(np.int64))
    rows = np.stack(codes, axis=1)  # (n, n_key_columns)
    return 1.0 - len(np.unique(rows, axis=0)) / n


def _npz_bytes(batch: dict[str, np.ndarray]) -> bytes:
    """The batch as .npz bytes with no pickled objects: object columns become unicode arrays
    (None -> "") plus a boolean `<column>__isnull` array when any value was None or NaN."""
    arrays = {}
    for name, v in batch.items():
        a = np.asarray(v)
        if a.dtype.kind == "O":
            null = np.fromiter((_is_missing_obj(x) for x in a.reshape(-1)), dtype=bool)
            a = np.array(
                ["" if m else str(x) for x, m in zip(a.reshape(-1), null, strict=True)], dtype=str
            )
            if null.any():
                arrays[f"{name}__isnull"] = null
        arrays[str(name)] = a
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def quarantine(batch: dict[str, np.ndarray], result: GateResult, directory) -> Path:
    """Write a refused batch aside for inspection and return the path of its .npz file.

    Writes <directory>/batch-<UTC time>-<sha256[:8]>.npz (np.load(..., allow_pickle=False)
    reads it back), then .json (the result) and .txt (the readable report) beside it, each
    atomically, so a crash never leaves a half-written file.
    """
    directory = Path(directory)
    data = _npz_bytes(batch)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    stem = f"batch-{stamp}-{hashlib.sha256(data).hexdigest()[:8]}"
    npz = atomic_write_bytes(directory / f"{stem}.npz", data)
    atomic_write_json(directory / f"{stem}.json", result.to_dict())
    atomic_write_text(directory / f"{stem}.txt", result.report() + "\n")
    return npz


def check_batches(
    batches: list[dict[str, np.ndarray]],
    schema: Schema,
    reference: Reference,
    thresholds: GateThresholds | None,
    quarantine_dir,
    max_messages: int = 3,
) -> tuple[list[int], list[str]]:
    """Check each batch; quarantine the refused ones (`quarantine`) into `quarantine_dir`.

    Returns (the positions of the batches that passed, one line per refused batch:
    "batch <i>: <first `max_messages` failed checks' messages>").
    """
    passed, failures = [], []
    for i, batch in enumerate(batches):
        res = check_batch(batch, schema, reference, thresholds)
        if res.passed:
            passed.append(i)
        else:
            quarantine(batch, res, quarantine_dir)
            failures.append(
                f"batch {i}: " + "; ".join(c.message for c in res.failed[:max_messages])
            )
    return passed, failures
