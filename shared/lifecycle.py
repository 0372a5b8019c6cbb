"""One lifecycle for every case: the run folder, the registry, torch threads, register-and-promote.

A case's cli.py uses it like this (the whole contract is in the docstrings below):

    out = run_folder("mobile-keyboard", args.out)            # runs/mobile-keyboard/<UTC time>/
    with torch_threads(cfg.train_threads):
        artifact = train(cfg, out / "artifact")               # ends in save_artifact(...)
    metrics = evaluate(cfg, artifact, out)                    # measured on the served artifact
    promotion = register_and_promote(
        artifact, registry_root(out, "mobile-keyboard"),
        metric="top1", candidate={"all": 0.31, "new_users": 0.27}, baseline={"all": 0.24},
        fingerprint=fp, preset=args.preset, seed=args.seed, loader=KeyboardPredictor.load,
    )
    report.extra["registry"] = promotion.to_dict()
    report.section("Registry and promotion", promotion.markdown())

Run layout (the same for every case):

    runs/<case>/<UTC time>/      one run: metrics.json, report.md, figures, artifact/
    runs/<case>/registry/        the registry shared by default runs (see `registry_root`)
    <out>/registry/              the registry of a run made with `--out <out>`

Registry layout (`shared.artifacts.Registry` plus one record per version):

    <registry>/versions/<name>/             the artifact, copied and never modified
    <registry>/versions/<name>.record.json  what was measured when it was registered
    <registry>/aliases.json                 {"champion": name, "previous": name}

A champion's figures always come from its own record (written atomically when IT was
registered), never from a later run's tables, so the comparison is with what was measured on the
artifact that is served.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.artifacts import (
    Registry,
    artifact_hash,
    promotion_check,
    verify_artifact,
)
from shared.errors import ArtifactError, CasebookError, first_line
from shared.io import atomic_write_json, to_jsonable

RUNS = Path("runs")  # relative to the working directory, as `casebook run` has always written
RECORD_SUFFIX = ".record.json"
_RECORD_FORMAT = 1


def run_folder(case: str, out: str | os.PathLike | None) -> Path:
    """The folder one run writes to, created.

    Args:
        case: the case's CLI name ("mobile-keyboard"), used in the default path.
        out: the `--out` folder, or None for the default `runs/<case>/<UTC time>/`
            (time as YYYYmmdd-HHMMSS; a second run in the same second gets a `-2` suffix).

    Returns:
        The folder (created, possibly already holding files when `out` was given).
    """
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = RUNS / case
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = base / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CasebookError(f"could not create a fresh run folder under {base}")


def registry_root(run: str | os.PathLike, case: str) -> Path:
    """The registry a run registers into (not created).

    A default run folder `runs/<case>/<time>/` shares `runs/<case>/registry`, so successive runs
    compete for one champion; a run with `--out D` gets its own `D/registry`, so
    `casebook serve CASE --artifact D/registry` serves what that run produced.
    """
    run = Path(run)
    if run.parent.name == case and run.parent.parent.name == RUNS.name:
        return run.parent / "registry"
    return run / "registry"


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Set torch's intra-op thread count to max(1, n) inside the block; restore it after.

    Yields the count in force. torch is imported here, so importing this module stays light.
    """
    import torch

    saved = torch.get_num_threads()
    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(saved)


@dataclass
class Promotion:
    """What `register_and_promote` did, and why, in lines a report can print.

    Attributes:
        version: the name the artifact was registered under ("v0003").
        promoted: True if it is now the champion.
        reasons: one line per check, in the order they ran.
        champion: the champion it was checked against (None for the first model).
        compared: True if the champion's figures were compared (same data fingerprint).
        error: set when the check could not be made (an unreadable champion, a candidate the
            loader refuses); the version is then not promoted.
        record: the record stored beside the version.
    """

    version: str
    promoted: bool
    reasons: list[str]
    champion: str | None = None
    compared: bool = False
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.promoted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for metrics.json (`report.extra["registry"]`)."""
        return {
            "version": self.version,
            "promoted": self.promoted,
            "champion_before": self.champion,
            "compared_with_champion": self.compared,
            "error": self.error,
            "reasons": list(self.reasons),
            "registry": self.record.get("registry"),
            "artifact_sha256": self.record.get("artifact_sha256"),
        }

    def markdown(self) -> str:
        """A short report section: the verdict, then one bullet per reason."""
        verdict = "promoted to champion" if self.promoted else "not promoted"
        head = f"Registered `{self.version}` in `{self.record.get('registry')}`: **{verdict}**."
        if self.error:
            head += f"\n\n**Error:** {self.error}"
        return head + "\n\n" + "\n".join(f"- {r}" for r in self.reasons)


def record_path(root: str | os.PathLike, version: str) -> Path:
    """Where the record of `version` lives in the registry at `root`."""
    return Path(root) / "versions" / f"{version}{RECORD_SUFFIX}"


def read_record(root: str | os.PathLike, version: str) -> dict[str, Any]:
    """The record stored when `version` was registered.

    Raises:
        ArtifactError (one line) if it is missing, unreadable or lacks the cohort figures.
    """
    path = record_path(root, version)
    if not path.is_file():
        raise ArtifactError(f"version {version} has no record ({path.name} missing)")
    try:
        rec = json.loads(path.read_text("utf-8"))
        cohorts = rec["candidate"]
        assert isinstance(rec, dict) and isinstance(cohorts, dict) and "all" in cohorts
        rec["candidate"] = {str(k): float(v) for k, v in cohorts.items()}
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
        raise ArtifactError(f"version {version}: record {path.name} is unreadable") from None
    return rec


def _cohorts(name: str, values: Mapping[str, float]) -> dict[str, float]:
    """Validate a cohort -> metric map: an 'all' entry and finite numbers."""
    try:
        out = {str(k): float(v) for k, v in values.items()}
    except (TypeError, ValueError):
        raise CasebookError(f"register_and_promote: {name} values must be numbers") from None
    if "all" not in out:
        raise CasebookError(f"register_and_promote: {name} needs an 'all' entry")
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise CasebookError(f"register_and_promote: {name} is not finite for {', '.join(bad)}")
    return out


def _champion_figures(
    registry: Registry, name: str, loader: Callable[[Path], Any] | None
) -> dict[str, Any]:
    """The champion's record, after checking its artifact still verifies (and loads)."""
    path = registry.versions_dir / name
    verify_artifact(path)
    if loader is not None:
        loader(path)
    return read_record(registry.root, name)


def register_and_promote(
    artifact_dir: str | os.PathLike,
    registry_root: str | os.PathLike,
    *,
    metric: str,
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    fingerprint: str,
    preset: str,
    seed: int,
    tolerance: float = 0.02,
    higher_is_better: bool = True,
    loader: Callable[[Path], Any] | None = None,
) -> Promotion:
    """Register an artifact, compare it with the champion, and promote it if the checks pass.

    Steps:
      1. The artifact is copied into the registry as the next version (a corrupt artifact is
         refused with ArtifactError). With `loader`, the registered copy must load and pass
         its golden set (`check_candidate`: it reproduces the scores recorded at training).
      2. A record {metric, candidate, baseline, fingerprint, preset, seed, artifact_sha256,
         registered_at, higher_is_better} is written atomically beside the version.
      3. The champion (if any) is read: its artifact must verify (and load, with `loader`) and
         its own record must be readable; if not, that is an error (`Promotion.error`, a line in
         `reasons`) and the new version is NOT promoted; roll back or promote by hand.
      4. Only a champion with the same data fingerprint is compared (another preset, seed or
         dataset makes other data, so the figures are not comparable); otherwise the reasons
         say it was not compared and only the baseline rule applies.
      5. `shared.artifacts.promotion_check`: the candidate must strictly beat the baseline on
         "all" and lose at most `tolerance` (absolute) to the champion on each of its cohorts.
      6. If the checks pass the version becomes the champion (the old one `previous`).
    All six hold the registry's lock (`Registry.lock`): a second run registering into the same
    registry at the same time waits, then compares with whatever this one promoted.

    Args:
        artifact_dir: the artifact this run built and evaluated (the one that will be served).
        registry_root: see `registry_root()`.
        metric: the metric's name, for the report ("top1", "ndcg@10").
        candidate: cohort name ("all", ...) -> the metric, measured on this artifact.
        baseline: cohort -> the baseline's metric on the same data ("all" required).
        fingerprint: sha256 of the training data (`shared.artifacts.fingerprint_arrays`).
        preset, seed: recorded with the version.
        tolerance: allowed absolute loss to the champion on any cohort.
        higher_is_better: False for a loss-like metric.
        loader: optional `loader(path)` (the case predictor's `load`), used to check that the
            candidate and the champion really load, and the candidate its golden set.

    Returns:
        A `Promotion`.

    Raises:
        ArtifactError: the artifact itself is corrupt (nothing is registered).
        CasebookError: `candidate` or `baseline` lack "all" or hold non-finite values.
    """
    cand = _cohorts("candidate", candidate)
    base = _cohorts("baseline", baseline)
    registry = Registry(registry_root)
    # One lock from reading the champion to promoting: another run cannot promote in
    # between (this decision would then compare with a champion that is no longer served).
    with registry.lock():
        champion = registry.aliases().get("champion")
        path = registry.register(artifact_dir)
        record = {
            "format": _RECORD_FORMAT,
            "version": path.name,
            "registry": str(registry.root),
            "metric": metric,
            "higher_is_better": bool(higher_is_better),
            "candidate": cand,
            "baseline": base,
            "fingerprint": str(fingerprint),
            "preset": str(preset),
            "seed": int(seed),
            "artifact_sha256": artifact_hash(path),
            "registered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(record_path(registry.root, path.name), to_jsonable(record))
        promotion = Promotion(path.name, False, [], champion=champion, record=record)

        if loader is not None:
            try:
                model = loader(path)
            except Exception as e:
                return _refuse(
                    promotion, f"the new version {path.name} does not load: {first_line(e)}"
                )
            try:
                line = golden_line(model, path)
            except Exception as e:
                return _refuse(
                    promotion, f"the new version {path.name} is refused: {first_line(e)}"
                )
            promotion.reasons.append(line)
        try:
            champ_cohorts = _comparable_champion(registry, promotion, loader)
        except Exception as e:
            return _refuse(
                promotion,
                f"the champion {champion} is unreadable ({first_line(e)}); {path.name} is not "
                f"promoted: roll back (Registry({str(registry.root)!r}).rollback()) or promote "
                f"a version by hand (.promote({path.name!r}))",
            )
        decision = promotion_check(cand, base, champ_cohorts, tolerance, higher_is_better)
        reasons = decision.reasons
        if champion is not None:  # a champion not compared is not "no champion"
            reasons = [r for r in reasons if r != "no champion yet"]
        promotion.reasons.extend(f"{metric}: {r}" for r in reasons)
        if decision.promote:
            registry.promote(path.name)
            promotion.promoted = True
        return promotion


def _comparable_champion(
    registry: Registry, promotion: Promotion, loader: Callable[[Path], Any] | None
) -> dict[str, float] | None:
    """The champion's recorded cohort figures if they can be compared with this run's, else None
    (with the reason added to `promotion.reasons`). Raises if the champion is unreadable."""
    champion, record = promotion.champion, promotion.record
    if champion is None:
        return None  # promotion_check says "no champion yet"
    champ = _champion_figures(registry, champion, loader)
    if champ.get("fingerprint") != record["fingerprint"]:
        promotion.reasons.append(
            f"champion {champion} was trained on other data (fingerprint "
            f"{str(champ.get('fingerprint'))[:12]} vs {record['fingerprint'][:12]}; preset "
            f"{champ.get('preset')} seed {champ.get('seed')}): not compared"
        )
        return None
    if champ.get("metric") != record["metric"]:
        promotion.reasons.append(
            f"champion {champion} recorded {champ.get('metric')!r}, not {record['metric']!r}: "
            "not compared"
        )
        return None
    promotion.compared = True
    return champ["candidate"]


def check_candidate(path: str | os.PathLike, loader: Callable[[Path], Any]) -> str:
    """Load a candidate version as serving will and run its golden check (shared.golden).

    Returns the check's one line ("golden set: 200 scores reproduced ...", or "golden set:
    none in the artifact"). Raises (ArtifactError, one line) when it does not load or fails
    its golden set: shuffled weights or a constant model in a well-formed artifact.
    """
    return golden_line(loader(Path(path)), Path(path))


def golden_line(model: Any, path: str | os.PathLike) -> str:
    """`shared.golden.check_golden` as a report line (raises when the model fails it)."""
    from shared.golden import check_golden

    line = check_golden(model, path)
    return line if line.startswith("golden set") else f"golden set: {line}"


def _refuse(promotion: Promotion, message: str) -> Promotion:
    promotion.error = message
    promotion.reasons.append(f"error: {message}")
    promotion.promoted = False
    return promotion
