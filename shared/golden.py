"""The golden set and the monitor's reference, shipped in every artifact, and the golden check.

A sha256 manifest proves an artifact's files are the ones written; it cannot tell that the model
in them is broken (weights shuffled by a bad export, a constant scorer, the wrong file written
into a valid manifest). The golden set can: at training time the saved artifact is loaded as
serving will load it, its scores on ~200 fixed requests are recorded in the artifact, and before
a version is promoted or served it must reproduce them.

The contract with a case (the whole of it; /tmp notes aside, this docstring is the reference):

  1. The predictor has one method

         def observation(self, requests: list[dict], answers: list[dict] | None = None
                         ) -> tuple[dict[str, list[float]], list[float]]:

     requests are JSON bodies of the main POST route; answers the batch's answers when serving
     has them (None: compute them). It returns (features: {name: one float per request},
     scores: a fixed number of floats per request). Scores must depend on the weights and be
     deterministic for a loaded model.

  2. After the artifact is saved, before it is registered:

         finish_artifact(artifact_dir, Predictor.load, golden_requests=reqs[:200],
                         reference_requests=reqs[200:2200])

     adds `golden.json` ({"requests", "scores", "atol", "rtol"}) and `monitor_reference.json`
     (`shared.monitor.MonitorReference`) and rewrites the manifest.

  3. The deployment: `self.model = ReloadableModel(root, Predictor.load, monitor="<case>")`
     and `self.model.observe(requests, answers)` in the batched handler (shared.serving).

The check (`check_golden`): the loaded model's scores on the golden requests must equal the
recorded ones within atol + rtol * |recorded| (every one of them: a healthy reload of the same
bytes reproduces them to float rounding, ~1e-7), and their spread must not have collapsed below
`MonitorThresholds.collapse_ratio` of the reference's (a model that was broken already when its
golden scores were recorded). It runs in `shared.lifecycle.register_and_promote` (not promoted),
at a replica's start (that version is skipped for `previous`) and on `/reload` (409, the old
model keeps serving). An artifact without `golden.json` is served unchecked ("golden": "none in
the artifact" on /status). `Registry.promote(v, force=True)` is the operator's override: that
version is served without the golden check, with a warning (the drills use it to show that the
live monitor catches what got through).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.artifacts import read_verified_file, rewrite_artifact
from shared.errors import ArtifactError, first_line

logger = logging.getLogger("casebook")

GOLDEN = "golden.json"
REFERENCE = "monitor_reference.json"
GOLDEN_ATOL = 1e-4  # float rounding between two loads is ~1e-7; a shuffled weight moves ~1e-1
GOLDEN_RTOL = 1e-3
BATCH = 64  # requests per observation() call, the same at record and at check time


def observe_requests(
    model: Any, requests: Sequence[dict], batch: int = BATCH
) -> tuple[dict[str, list[float]], list[float]]:
    """`model.observation(requests)` in batches of `batch`; (features, scores) concatenated."""
    if not hasattr(model, "observation"):
        raise ArtifactError(f"{type(model).__name__} has no observation() method")
    features: dict[str, list[float]] = {}
    scores: list[float] = []
    for i in range(0, len(requests), batch):
        f, s = model.observation(list(requests[i : i + batch]), None)
        for name, values in f.items():
            features.setdefault(name, []).extend(float(v) for v in np.ravel(values))
        scores.extend(float(v) for v in np.ravel(s))
    return features, scores


def finish_artifact(
    artifact_dir: str | os.PathLike,
    loader: Callable[[Path], Any],
    golden_requests: Sequence[dict],
    reference_requests: Sequence[dict],
    *,
    decision_threshold: float | None = None,
    decision: str | None = None,
    atol: float = GOLDEN_ATOL,
    rtol: float = GOLDEN_RTOL,
) -> Path:
    """Load the saved artifact with `loader`, record its golden scores and the monitor's
    reference, and add both files to it (manifest rewritten atomically). Returns the folder."""
    from shared.monitor import build_reference

    artifact_dir = Path(artifact_dir)
    if not golden_requests or not reference_requests:
        raise ArtifactError("finish_artifact needs golden and reference requests")
    model = loader(artifact_dir)
    golden_features, golden_scores = observe_requests(model, golden_requests)
    features, scores = observe_requests(model, reference_requests)
    ref = build_reference(
        features, scores, decision_threshold=decision_threshold, decision=decision
    )
    golden = {
        "format": 1,
        "requests": list(golden_requests),
        "scores": golden_scores,
        # The features too: a part of the model that the scores do not read (smart reply's
        # message tower moves only its `top_score` feature) is checked as well.
        "features": golden_features,
        "atol": float(atol),
        "rtol": float(rtol),
        "batch": BATCH,
    }
    return rewrite_artifact(
        artifact_dir,
        {
            GOLDEN: json.dumps(golden).encode("utf-8"),
            REFERENCE: json.dumps(ref.to_dict()).encode("utf-8"),
        },
    )


def read_golden(artifact_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The artifact's golden set (checked against its manifest), or None if it has none."""
    data = read_verified_file(artifact_dir, GOLDEN)
    if data is None:
        return None
    try:
        doc = json.loads(data)
        assert isinstance(doc["requests"], list)
        doc["scores"] = [float(x) for x in doc["scores"]]
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ArtifactError(f"artifact {artifact_dir}: {GOLDEN} is unreadable") from None
    return doc


def read_reference(artifact_dir: str | os.PathLike) -> Any | None:
    """The artifact's `MonitorReference` (checked against its manifest), or None."""
    from shared.monitor import MonitorReference

    data = read_verified_file(artifact_dir, REFERENCE)
    if data is None:
        return None
    try:
        return MonitorReference.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"artifact {artifact_dir}: {REFERENCE} is unreadable") from None


def check_golden(model: Any, artifact_dir: str | os.PathLike) -> str:
    """Refuse a loaded model that does not reproduce its artifact's golden scores and features.

    Returns a one-line verdict ("golden set: 200 scores reproduced (max abs diff 2e-08)", "none in
    the artifact", "skipped (no observation method)"). Raises ArtifactError with one line naming
    the figure when the model fails.
    """
    from shared.monitor import MonitorThresholds

    golden = read_golden(artifact_dir)
    if golden is None:
        return "none in the artifact"
    if not hasattr(model, "observation"):
        return f"skipped ({type(model).__name__} has no observation method)"
    try:
        feats, got = observe_requests(model, golden["requests"], int(golden.get("batch", BATCH)))
    except Exception as e:
        raise ArtifactError(f"golden set: the model fails on it ({first_line(e)})") from None
    want = np.asarray(golden["scores"], dtype=np.float64)
    have = np.asarray(got, dtype=np.float64)
    if have.shape != want.shape:
        raise ArtifactError(
            f"golden set: {have.size} scores for {len(golden['requests'])} requests, "
            f"{want.size} recorded"
        )
    if not np.all(np.isfinite(have)):
        bad = int((~np.isfinite(have)).sum())
        raise ArtifactError(f"golden set: {bad} of {have.size} scores are NaN or infinite")
    atol, rtol = float(golden.get("atol", GOLDEN_ATOL)), float(golden.get("rtol", GOLDEN_RTOL))
    diff = np.abs(have - want)
    off = diff > atol + rtol * np.abs(want)
    if off.any():
        raise ArtifactError(
            f"golden set: {int(off.sum())} of {have.size} scores differ from those recorded at "
            f"training (max abs diff {diff.max():.3g}, tolerance {atol:g} + {rtol:g} x score): "
            "the weights are not the ones that were evaluated"
        )
    off_features = _features_off(golden.get("features") or {}, feats, atol, rtol)
    if off_features:
        raise ArtifactError(
            f"golden set: feature {off_features} differs from what was recorded at training "
            "(the scores reproduce): a part of the model the scores do not read is not the one "
            "that was evaluated"
        )
    ref = read_reference(artifact_dir)
    if ref is not None and have.size > 1:
        ref_std, std = float(np.std(ref.scores)), float(np.std(have))
        ratio = MonitorThresholds().collapse_ratio
        if ref_std > 0 and std < ratio * ref_std:
            raise ArtifactError(
                f"golden set: scores collapsed (std {std:.3g} against {ref_std:.3g} on the "
                f"reference, below {ratio:g}x): a constant or broken model"
            )
    return f"golden set: {have.size} scores reproduced (max abs diff {diff.max():.2g})"


def _features_off(want: dict, have: dict, atol: float, rtol: float) -> str:
    """The first recorded feature that does not reproduce, with its figure ("" when all do).

    Only features recorded at training and still computed are compared (an artifact from before
    features were recorded has none): |have - want| <= atol + rtol |want| per request, NaN equal
    to NaN."""
    for name in sorted(set(want) & set(have)):
        w = np.asarray(want[name], dtype=np.float64)
        h = np.asarray(have[name], dtype=np.float64)
        if w.shape != h.shape:
            return f"{name!r} ({h.size} values for {w.size} recorded)"
        ok = np.isclose(h, w, atol=atol, rtol=rtol, equal_nan=True)
        if not ok.all():
            diff = np.nanmax(np.abs(h - w)) if np.isfinite(h - w).any() else float("nan")
            return f"{name!r} ({int((~ok).sum())} of {w.size} requests, max abs diff {diff:.3g})"
    return ""


def load_checked(loader: Callable[[Path], Any], path: Path) -> tuple[Any, str]:
    """`loader(path)` then `check_golden`; (model, the check's one line). Raises on refusal."""
    model = loader(path)
    return model, check_golden(model, path)


def shuffle_weights(artifact_dir: str | os.PathLike, seed: int = 0) -> list[str]:
    """Break a model without breaking its artifact (for the silent-failure drill and tests):
    permute the values of every float tensor (and every int8 tensor: quantized weights) in each
    .safetensors file, every float initializer of each .onnx file and every float .npy array,
    then rewrite the manifest so the sha256 check passes. Returns what was shuffled."""
    import io

    rng = np.random.default_rng(seed)
    artifact_dir = Path(artifact_dir)
    changed: dict[str, bytes] = {}
    done: list[str] = []

    def permute(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(-1).copy()
        rng.shuffle(flat)
        if np.array_equal(flat, a.reshape(-1)):  # a permutation that moved nothing: move it
            flat = np.roll(flat, 1)
        return flat.reshape(a.shape)

    for path in sorted(artifact_dir.iterdir()):
        name = path.name
        if name.endswith(".safetensors"):
            from safetensors.numpy import load as st_load
            from safetensors.numpy import save as st_save

            try:
                tensors = st_load(path.read_bytes())
            except Exception:
                continue
            n = 0
            for key, a in tensors.items():
                if a.size > 1 and (a.dtype.kind == "f" or a.dtype == np.int8):
                    tensors[key], n = permute(a), n + 1
            if n:
                changed[name] = st_save(tensors)
                done.append(f"{name}: {n} tensors")
        elif name.endswith(".onnx"):
            import onnx
            from onnx import numpy_helper

            m = onnx.load_from_string(path.read_bytes())
            n = 0
            for init in m.graph.initializer:
                a = numpy_helper.to_array(init)
                if a.size > 1 and a.dtype.kind == "f":
                    init.CopyFrom(numpy_helper.from_array(permute(a), init.name))
                    n += 1
            if n:
                changed[name] = m.SerializeToString()
                done.append(f"{name}: {n} initializers")
        elif name.endswith(".npy"):
            a = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
            if a.size > 1 and a.dtype.kind == "f":
                buf = io.BytesIO()
                np.save(buf, permute(a), allow_pickle=False)
                changed[name] = buf.getvalue()
                done.append(f"{name}: 1 array")
    if changed:
        rewrite_artifact(artifact_dir, changed)
    return done
