"""A live monitor for a served model: a rolling window of its inputs and scores against the
reference from training, with drift figures, a silent-failure alarm, and alarm log lines.

A case builds the reference once, at training time, from the numbers it already has:

    ref = build_reference({"context_len": lens, "prefix_len": plens}, val_scores,
                          decision_threshold=0.9, decision="auto_remove")
    files["monitor_reference.json"] = json.dumps(ref.to_dict()).encode()   # in the artifact

and the deployment keeps a `Monitor` next to its model:

    self.monitor = Monitor(MonitorReference.from_dict(...), name="content-moderation")
    ...
    self.monitor.observe({"context_len": [...], ...}, scores)   # per request or per batch

`standard_routes` then shows `monitor.status()` under "monitor" on `/status`, and inside a Ray
Serve replica the figures are also `ray.serve.metrics` gauges (Prometheus, on Ray's metrics
port): `casebook_monitor_psi{app, feature}`, `casebook_monitor_ks{app, feature}`,
`casebook_monitor_alarm{app, check}` (1 while firing) and `casebook_monitor_window`.

What is checked, on the last `window` observations once `min_count` are in (see
MonitorThresholds for each number and why):
  drift      PSI and the two-sample KS statistic of each input feature and of the scores
             against the reference sample; names the features that moved.
  collapse   the scores' spread falls to a sliver of the reference's (a constant model, a
             model whose weights were shuffled into saturation): the silent failure a sha256
             check cannot see, since the artifact is well formed.
  decision   the rate of the case's decision (auto-removal, a suggestion shown, ...) leaves the
             band the reference rate allows for a window of this size.
An alarm is logged once when it starts firing ("monitor <name>: ALARM drift: ...") and once
when it clears, on the "casebook" logger, so a log search finds the moment it crossed.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shared.drift import bin_proportions, psi_from_proportions, quantile_edges

logger = logging.getLogger("casebook")

REFERENCE_SAMPLE = 2000  # values kept per feature: KS and PSI on 2000 are stable to ~0.01


@dataclass(frozen=True)
class MonitorThresholds:
    """When the monitor raises an alarm, and why each number.

    window: observations kept (500: about a minute of a busy replica; large enough for PSI's
        10 bins to hold ~50 each, small enough to notice a change within minutes).
    min_count: no verdict before this many (100: 10 per PSI bin; below it PSI is noise).
    check_every: observations between two evaluations (cost: a PSI and a KS per feature).
    psi_alarm: 0.25, the credit-risk rule of thumb for "a shift worth acting on" (shared.drift).
    ks_alarm: 0.15, the two-sample KS critical value at alpha ~0.001 for a window of ~200
        against a large reference (1.95 / sqrt(n)); a real shift of a feature is far above it.
    Both are floors: on a small window sampling noise alone can cross them, so each check uses
    the larger of the floor and the statistic's own 99.9% level under no change
    (`alarm_levels`): KS 1.95 * sqrt((n + m) / (n m)); PSI ~ chi2(11) * (1/n + 1/m) for the
    12 bins of `monitor_psi`, 31.3 * (1/n + 1/m). At the first verdict (n = 100 against
    m = 2000) that is KS 0.20 and PSI 0.33; from n ~ 170 (KS) and ~ 130 (PSI) on, the floors
    rule. Measured on the keyboard's own validation
    keystrokes: with the floors alone, n = 100 raised a false drift alarm (prefix_chars PSI
    0.23, KS 0.15).
    collapse_ratio: scores whose standard deviation is below 5% of the reference's have
        collapsed (a healthy model's spread over real traffic does not shrink 20-fold).
    rate_sigmas, rate_slack: the decision rate may move 4 binomial standard errors of the
        window (sqrt(p(1-p)/n)) plus 0.02 absolute from the reference rate; 4 sigma keeps false
        alarms below 1 in 10,000 checks under no change, the slack covers day-to-day mix.
    """

    window: int = 500
    min_count: int = 100
    check_every: int = 50
    psi_alarm: float = 0.25
    ks_alarm: float = 0.15
    collapse_ratio: float = 0.05
    rate_sigmas: float = 4.0
    rate_slack: float = 0.02


def _sample(values: Any, size: int = REFERENCE_SAMPLE) -> list[float]:
    """Finite values, thinned evenly over their sorted order to at most `size` (deterministic)."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    a = np.sort(a[np.isfinite(a)])
    if a.size == 0:
        raise ValueError("a monitor reference needs finite values")
    if a.size > size:
        a = a[np.linspace(0, a.size - 1, size).round().astype(np.int64)]
    return [float(x) for x in a]


@dataclass
class MonitorReference:
    """What normal looks like, from training/validation data (JSON-able: ship it in the artifact).

    features: {name: sorted sample of the feature's values}; scores: sorted sample of the
    model's scores; decision: the decision's name and threshold (score >= threshold) and its
    rate on the reference, or None.
    """

    features: dict[str, list[float]]
    scores: list[float]
    decision: str | None = None
    decision_threshold: float | None = None
    decision_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def prepared(self, name: str | None) -> PreparedSample:
        """The prepared sample of feature `name` (None: the scores), computed once."""
        cache = self.__dict__.setdefault("_prepared", {})  # not a field: not in to_dict
        if name not in cache:
            cache[name] = PreparedSample.of(self.scores if name is None else self.features[name])
        return cache[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MonitorReference:
        return cls(
            features={str(k): [float(x) for x in v] for k, v in d["features"].items()},
            scores=[float(x) for x in d["scores"]],
            decision=d.get("decision"),
            decision_threshold=d.get("decision_threshold"),
            decision_rate=d.get("decision_rate"),
        )


def build_reference(
    features: Mapping[str, Any],
    scores: Any,
    *,
    decision_threshold: float | None = None,
    decision: str | None = None,
) -> MonitorReference:
    """The reference from training-time arrays: {feature: values (n,)}, scores (n,)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    rate = None
    if decision_threshold is not None:
        rate = float(np.mean(s[np.isfinite(s)] >= decision_threshold))
    return MonitorReference(
        features={str(k): _sample(v) for k, v in features.items()},
        scores=_sample(s),
        decision=decision or ("decision" if decision_threshold is not None else None),
        decision_threshold=None if decision_threshold is None else float(decision_threshold),
        decision_rate=rate,
    )


def ks_statistic(reference: Any, window: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(window, dtype=np.float64))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


# The 99.9% quantile of chi-square with 11 degrees of freedom: `monitor_psi` uses up to 12 bins.
PSI_CHI2_999 = 31.26


def alarm_levels(th: MonitorThresholds, n: int, m: int) -> dict[str, float]:
    """The PSI and KS levels that raise an alarm for a window of n against a reference of m:
    the thresholds, or the statistic's 99.9% level under no change if higher (see
    MonitorThresholds)."""
    n, m = max(int(n), 1), max(int(m), 1)
    return {
        "psi": max(th.psi_alarm, PSI_CHI2_999 * (1 / n + 1 / m)),
        "ks": max(th.ks_alarm, 1.95 * math.sqrt((n + m) / (n * m))),
    }


def drift_figures(reference: Any, window: Any) -> dict[str, float]:
    """{"psi", "ks"} of a window against a reference sample (both 1-D, finite values only)."""
    return PreparedSample.of(reference).figures(window)


def monitor_psi(reference: Any, window: Any, bins: int = 10) -> float:
    """PSI over the reference's quantile bins plus two edges: at its minimum and just above
    its maximum.

    The extra edges give values outside the reference's range bins of their own. Without them
    a feature with a point mass (a share of unknown words: 0 for most requests; a share of
    non-ASCII letters: 0 for all) has all its quantiles at 0 and a single bin "0 and above",
    so a window of values all above it scored PSI 0.00 (measured: the keyboard's oov_share
    under random-letter traffic, content moderation's non_ascii under Cyrillic; KS saw 1.00).
    """
    return PreparedSample.of(reference, bins).psi(window)


@dataclass
class PreparedSample:
    """A reference sample with what every check reuses computed once: sorted values, PSI bin
    edges and the reference's bin shares (a check then costs ~1 ms per feature, not ~5)."""

    values: np.ndarray  # sorted, finite
    edges: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, reference: Any, bins: int = 10) -> PreparedSample:
        ref = np.asarray(reference, dtype=np.float64).reshape(-1)
        ref = np.sort(ref[np.isfinite(ref)])
        if ref.size == 0:
            raise ValueError("a monitor reference needs finite values")
        # Below the minimum, and above the maximum (nextafter: bins are [lo, hi), so the edge at
        # the maximum itself would put the reference's largest values with those above it).
        top = np.nextafter(ref[-1], np.inf)
        edges = np.unique(np.concatenate([quantile_edges(ref, bins), [ref[0], top]]))
        return cls(ref, edges, bin_proportions(ref, edges))

    def psi(self, window: Any) -> float:
        return float(psi_from_proportions(self.shares, bin_proportions(window, self.edges)))

    def ks(self, window: Any) -> float:
        a = self.values
        b = np.sort(np.asarray(window, dtype=np.float64).reshape(-1))
        gap_a = (
            np.searchsorted(a, a, side="right") / a.size - np.searchsorted(b, a, "right") / b.size
        )
        gap_b = (
            np.searchsorted(a, b, side="right") / a.size - np.searchsorted(b, b, "right") / b.size
        )
        return float(max(np.abs(gap_a).max(), np.abs(gap_b).max()))

    def figures(self, window: Any) -> dict[str, float]:
        w = np.asarray(window, dtype=np.float64).reshape(-1)
        w = w[np.isfinite(w)]
        if w.size == 0:
            return {"psi": math.inf, "ks": 1.0}
        return {"psi": self.psi(w), "ks": self.ks(w)}


def evaluate_window(
    reference: MonitorReference,
    features: Mapping[str, Any],
    scores: Any,
    th: MonitorThresholds = MonitorThresholds(),
) -> dict[str, Any]:
    """The monitor's verdict on one window (pure: the Monitor class only keeps the window).

    Returns {"n", "features": {name: {"psi", "ks"}}, "scores": {"psi", "ks", "std",
    "reference_std"}, "decision_rate", "decision_band", "alarms": {check: one line}}; the
    alarms are "drift" (naming the features that moved), "score_drift", "collapse" and
    "decision_rate". With fewer than `min_count` scores, no alarms and "ready": False.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    out: dict[str, Any] = {"n": int(s.size), "ready": s.size >= th.min_count, "alarms": {}}
    if not out["ready"]:
        return out
    alarms: dict[str, str] = out["alarms"]
    moved = []
    out["features"] = {}
    for name, ref in reference.features.items():
        if name not in features:
            continue
        fig = reference.prepared(name).figures(features[name])
        level = alarm_levels(th, len(features[name]), len(ref))
        out["features"][name] = {**fig, "level_psi": level["psi"], "level_ks": level["ks"]}
        if fig["psi"] > level["psi"] or fig["ks"] > level["ks"]:
            moved.append(f"{name} (PSI {fig['psi']:.2f}, KS {fig['ks']:.2f})")
    if moved:
        alarms["drift"] = "inputs moved: " + ", ".join(moved)
    fig = reference.prepared(None).figures(s)
    finite = s[np.isfinite(s)]
    std = float(finite.std()) if finite.size else 0.0
    ref_std = float(np.std(reference.scores))
    level = alarm_levels(th, finite.size, len(reference.scores))
    out["scores"] = {
        **fig,
        "std": std,
        "reference_std": ref_std,
        "level_psi": level["psi"],
        "level_ks": level["ks"],
    }
    if ref_std > 0 and std < th.collapse_ratio * ref_std:
        alarms["collapse"] = (
            f"scores collapsed: std {std:.3g} against {ref_std:.3g} in training "
            f"(below {th.collapse_ratio:g}x; a constant or broken model)"
        )
    elif finite.size < s.size:
        alarms["collapse"] = f"{s.size - finite.size} of {s.size} scores are NaN or infinite"
    if fig["psi"] > level["psi"] or fig["ks"] > level["ks"]:
        alarms["score_drift"] = f"scores moved: PSI {fig['psi']:.2f}, KS {fig['ks']:.2f}"
    if reference.decision_threshold is not None and reference.decision_rate is not None:
        p = reference.decision_rate
        rate = float(np.mean(finite >= reference.decision_threshold)) if finite.size else 0.0
        half = th.rate_sigmas * math.sqrt(max(p * (1 - p), 1e-12) / s.size) + th.rate_slack
        band = (max(0.0, p - half), min(1.0, p + half))
        out["decision_rate"], out["decision_band"] = rate, band
        if not band[0] <= rate <= band[1]:
            alarms["decision_rate"] = (
                f"{reference.decision} rate {rate:.3f} left its band "
                f"[{band[0]:.3f}, {band[1]:.3f}] (reference {p:.3f})"
            )
    return out


@dataclass
class Monitor:
    """A rolling window of one app's inputs and scores, checked every `check_every` observations.

    Not thread-safe by itself: call `observe` from the replica's event loop (or hold a lock).
    """

    reference: MonitorReference
    name: str = "app"
    thresholds: MonitorThresholds = field(default_factory=MonitorThresholds)

    def __post_init__(self) -> None:
        w = self.thresholds.window
        self._features = {k: deque(maxlen=w) for k in self.reference.features}
        self._scores: deque[float] = deque(maxlen=w)
        self._since_check = 0
        self.observed = 0
        self.last: dict[str, Any] = {"n": 0, "ready": False, "alarms": {}}
        self.alarm_log: list[str] = []  # every alarm line logged, in order
        self._gauges: dict[str, Any] | None = None

    def observe(self, features: Mapping[str, Any], scores: Any) -> dict[str, Any]:
        """Add one request's (or one batch's) feature values and scores; return the last verdict.

        features: {name: a value or values (k,)}; scores: a value or values (m,). Unknown
        feature names are ignored (the reference decides what is watched).
        """
        for name, values in features.items():
            if name in self._features:
                vals = np.asarray(values, dtype=np.float64).reshape(-1).tolist()
                self._features[name].extend(vals)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        self._scores.extend(s.tolist())
        self.observed += int(s.size)
        self._since_check += int(s.size)
        if self._since_check >= self.thresholds.check_every:
            self.check()
        return self.last

    def check(self) -> dict[str, Any]:
        """Evaluate the window now; log alarms that start or stop firing; update the gauges."""
        self._since_check = 0
        before = set(self.last.get("alarms", {}))
        verdict = evaluate_window(
            self.reference,
            {k: list(v) for k, v in self._features.items()},
            list(self._scores),
            self.thresholds,
        )
        verdict["observed"] = self.observed
        for check, line in verdict["alarms"].items():
            if check not in before:
                self._log(f"monitor {self.name}: ALARM {check}: {line}", logging.WARNING)
        for check in before - set(verdict["alarms"]):
            self._log(f"monitor {self.name}: cleared {check}", logging.INFO)
        self.last = verdict
        self._export(verdict)
        return verdict

    def status(self) -> dict[str, Any]:
        """The last verdict, JSON-able (for /status)."""
        out = dict(self.last)
        out["alarm_log"] = self.alarm_log[-10:]
        return _jsonable(out)

    def _log(self, line: str, level: int) -> None:
        self.alarm_log.append(line)
        logger.log(level, line)

    def _export(self, verdict: dict[str, Any]) -> None:
        """Set the ray.serve.metrics gauges (only inside a Ray worker; a no-op elsewhere)."""
        if self._gauges is None:
            self._gauges = _make_gauges()
        g = self._gauges
        if not g:
            return
        tags = {"app": self.name}
        g["window"].set(float(verdict["n"]), tags=tags)
        for name, fig in {
            **verdict.get("features", {}),
            "score": verdict.get("scores", {}),
        }.items():
            if "psi" in fig:
                g["psi"].set(_finite(fig["psi"]), tags={**tags, "feature": name})
                g["ks"].set(_finite(fig["ks"]), tags={**tags, "feature": name})
        for check in ("drift", "score_drift", "collapse", "decision_rate"):
            firing = 1.0 if check in verdict["alarms"] else 0.0
            g["alarm"].set(firing, tags={**tags, "check": check})


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 1e9


def _make_gauges() -> dict[str, Any]:
    try:
        import ray

        if not ray.is_initialized():
            return {}
        from ray.serve import metrics
    except Exception:  # no Ray here: /status still has the figures
        return {}
    return {
        "psi": metrics.Gauge(
            "casebook_monitor_psi", "PSI of a feature's window", tag_keys=("app", "feature")
        ),
        "ks": metrics.Gauge(
            "casebook_monitor_ks", "KS statistic of a feature's window", tag_keys=("app", "feature")
        ),
        "alarm": metrics.Gauge(
            "casebook_monitor_alarm", "1 while the check's alarm fires", tag_keys=("app", "check")
        ),
        "window": metrics.Gauge("casebook_monitor_window", "observations", tag_keys=("app",)),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
