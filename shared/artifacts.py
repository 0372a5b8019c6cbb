"""Artifacts with a sha256 manifest, a sanity check, the promotion check, and a registry.

An artifact is a folder:

    weights.safetensors   tensors (safetensors, never pickle)
    config.json           the resolved config the model was built from
    metrics.json          its offline metrics
    fingerprint           sha256 of the training data (see `fingerprint_arrays`)
    <extra files>         optional (a vocabulary, an ONNX file, ...)
    MANIFEST.json         {"format": 1, "files": {name: {"sha256": hex, "bytes": int}}}

`save_artifact` writes and fsyncs everything into `.<dir>.tmp-<random>` beside the target and
renames it into place, so a crash mid-save never leaves a half-written artifact. `load_artifact`
re-hashes every file listed in the manifest and refuses the artifact (ArtifactError, one line
naming the file) if one is missing, resized or changed.

Crash safety, step by step (each step is a `shared.io.crash_point`, and a test kills a process at
every one of them): replacing an existing artifact renames it aside to `<dir>.old-<random>`, renames
the new one into place, then deletes the old copy. A crash between the two renames leaves no
`<dir>` at all; `recover_artifact` (run by `save_artifact` and `load_artifact` before they touch
the folder) renames the whole `.old-*` copy back, and removes leftovers (`.old-*` once `<dir>` is
whole, `.tmp-*` staging folders older than STALE_TMP_S).

A registry is a folder of versions plus two aliases written atomically:

    <root>/versions/<name>/   artifacts (never modified once registered)
    <root>/aliases.json       {"champion": name, "previous": name}
    <root>/registry.lock      the lock writers take (`Registry.lock`); empty

A version is copied file by file (each fsynced) into a hidden `.<name>.tmp-*` folder, verified,
renamed into place and the folder fsynced: a crash leaves either the whole version or a hidden
staging folder that `Registry.versions` never lists and `Registry.recover` removes.

Two runs may write one registry at once (`runs/<case>/registry` is shared by default runs): every
write (`register`, `promote`, `rollback`) holds an OS file lock on `registry.lock` (filelock:
flock on POSIX, released by the kernel if the holder dies), so two registrations get two
names and no alias update is lost. Readers (`aliases`, `resolve`, serving) take no lock: every
file they read is replaced atomically.

`Registry.promote` moves the champion to `previous`; `Registry.rollback` swaps them back.
`load_with_fallback` loads the champion and, if it is refused, `previous`, logging why.
`shared.lifecycle.register_and_promote` puts these together for a case (register, compare with
the champion's recorded figures, promote); cases call that rather than these pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from shared.errors import ArtifactError, CasebookError, first_line
from shared.io import (
    atomic_write_json,
    crash_point,
    fsync_dir,
    staged,
    to_jsonable,
    write_file_synced,
)

logger = logging.getLogger("casebook")

T = TypeVar("T")

MANIFEST = "MANIFEST.json"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
FINGERPRINT = "fingerprint"
_RESERVED = {MANIFEST, WEIGHTS, CONFIG, METRICS, FINGERPRINT}
# Extra file names: one path component, no hidden files, nothing that could escape the folder.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_FORMAT = 1
# A hidden staging folder older than this is a crashed save's leftover, not a save in progress:
# the largest artifact in the cases (MiniLM fine-tuned, ~90 MB) is written in seconds.
STALE_TMP_S = 600.0
# How long a registry write waits for another run's (register_and_promote holds the lock while it
# loads and golden-checks the new version: seconds to a minute for the largest case).
REGISTRY_LOCK_TIMEOUT_S = 600.0


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_fsync_dir = fsync_dir
_write_file = write_file_synced


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_stale(path: Path, stale_after_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= stale_after_s
    except OSError:
        return False  # gone already


def recover_artifact(directory: str | os.PathLike, stale_after_s: float = STALE_TMP_S) -> list[str]:
    """Repair what a crashed `save_artifact` left beside `directory`; return what was done.

    - `directory` missing and a `<name>.old-*` copy that verifies: renamed back (the crash fell
      between the two renames of a replace; the old artifact is whole).
    - `directory` present: its `.old-*` copies are removed (the crash fell after the new one
      was in place).
    - `.<name>.tmp-*` staging folders older than `stale_after_s` are removed.
    Each action is logged as a warning on the "casebook" logger and returned as one line.
    """
    directory = Path(directory)
    parent, name = directory.parent, directory.name
    if not parent.is_dir():
        return []
    done: list[str] = []
    olds = sorted(parent.glob(f"{name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not directory.exists():
        for old in olds:
            try:
                verify_artifact(old)
            except ArtifactError:
                continue
            os.replace(old, directory)
            fsync_dir(parent)
            done.append(f"restored {directory} from {old.name} (a save was interrupted)")
            olds.remove(old)
            break
    if directory.exists():
        for old in olds:
            _remove(old)
            done.append(f"removed {old.name} (left by an interrupted save)")
    for tmp in parent.glob(f".{name}.tmp-*"):
        if _is_stale(tmp, stale_after_s):
            _remove(tmp)
            done.append(f"removed {tmp.name} (left by an interrupted save)")
    for line in done:
        logger.warning("artifact recovery: %s", line)
    return done


def fingerprint_arrays(*arrays: Any) -> str:
    """sha256 over each array's dtype, shape and bytes, in order (numpy arrays or torch tensors).

    Two datasets with the same values but a different dtype or shape get different fingerprints.
    """
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):  # a torch tensor
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        if a.dtype == object:
            raise CasebookError("fingerprint_arrays needs numeric or fixed-width string arrays")
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Artifact:
    """A verified, loaded artifact."""

    path: Path
    tensors: dict[str, Any]  # name -> torch.Tensor (CPU)
    config: dict[str, Any]
    metrics: dict[str, Any]
    data_fingerprint: str
    files: dict[str, bytes] = field(default_factory=dict)


def save_artifact(
    directory: str | os.PathLike,
    tensors: Mapping[str, Any],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    data_fingerprint: str,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write an artifact folder atomically and return its path.

    Everything is written and fsynced into `.<directory>.tmp-<random>`, then renamed to
    `directory` and the parent folder fsynced. If `directory` already exists it is first renamed
    aside and removed after the new one is in place; a crash between the two renames leaves the
    old copy as `<directory>.old-<random>`, which `recover_artifact` renames back (see the
    module doc). Never a half-written artifact under `directory`.
    """
    from safetensors.torch import save as safetensors_save

    directory = Path(directory)
    files = dict(files or {})
    for name in files:
        if name in _RESERVED or not _SAFE_NAME.match(name):
            raise ArtifactError(f"artifact file name {name!r} is reserved or not a plain file name")
    # safetensors needs contiguous CPU tensors; clone so shared storage never aliases.
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    contents: dict[str, bytes] = {
        WEIGHTS: safetensors_save(flat),
        CONFIG: _json_bytes(dict(config)),
        METRICS: _json_bytes(dict(metrics)),
        FINGERPRINT: (str(data_fingerprint) + "\n").encode("utf-8"),
    }
    for name, data in files.items():
        contents[name] = bytes(data)
    return _write_contents(directory, contents)


def rewrite_artifact(directory: str | os.PathLike, files: Mapping[str, bytes]) -> Path:
    """Add or replace files of an existing (verified) artifact and rewrite its manifest,
    atomically like `save_artifact`. For files computed from the saved artifact itself (the
    golden set and the monitor's reference, `shared.golden.finish_artifact`) and for the drills'
    well-formed-but-broken copies. The artifact's hash changes: call it before registering."""
    directory = Path(directory)
    contents = verify_artifact(directory)
    for name, data in files.items():
        if name == MANIFEST or not _SAFE_NAME.match(name):
            raise ArtifactError(f"artifact file name {name!r} is reserved or not a plain file name")
        contents[name] = bytes(data)
    return _write_contents(directory, contents)


def read_verified_file(directory: str | os.PathLike, name: str) -> bytes | None:
    """One file of an artifact, checked against its manifest entry; None if the manifest does
    not list it. Raises ArtifactError if it is listed but missing or changed."""
    directory = Path(directory)
    entry = _read_manifest(directory).get(name)
    if entry is None:
        return None
    path = directory / name
    if not isinstance(entry, dict) or not path.is_file():
        raise ArtifactError(f"artifact {directory}: file {name} is missing")
    data = path.read_bytes()
    if len(data) != entry.get("bytes") or _sha256(data) != entry.get("sha256"):
        raise ArtifactError(
            f"artifact {directory}: file {name} is corrupt or was modified (sha256 mismatch)"
        )
    return data


def _write_contents(directory: Path, contents: Mapping[str, bytes]) -> Path:
    """Write {file name: bytes} plus their MANIFEST.json as the artifact `directory`, atomically
    (staged folder, fsyncs, the two renames of a replace; see the module doc)."""
    manifest = {
        "format": _FORMAT,
        "files": {n: {"sha256": _sha256(d), "bytes": len(d)} for n, d in contents.items()},
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_artifact(directory)
    with staged(directory) as tmp:
        tmp.mkdir()
        for name, data in contents.items():
            _write_file(tmp / name, data)
            crash_point(f"save {directory.name}: {name} written")
        # The manifest goes last: a folder without one is never a valid artifact.
        _write_file(tmp / MANIFEST, _json_bytes(manifest))
        _fsync_dir(tmp)
        crash_point(f"save {directory.name}: manifest written")
        if directory.exists():
            old = directory.parent / f"{directory.name}.old-{secrets.token_hex(4)}"
            os.replace(directory, old)
            crash_point(f"save {directory.name}: old copy renamed aside")
            os.replace(tmp, directory)
            _fsync_dir(directory.parent)
            crash_point(f"save {directory.name}: new copy in place")
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
        _fsync_dir(directory.parent)
        crash_point(f"save {directory.name}: done")
    return directory


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    if not directory.is_dir():
        raise ArtifactError(f"artifact {directory} not found (no such folder)")
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"artifact {directory} has no {MANIFEST} (incomplete or not an artifact)"
        )
    try:
        manifest = json.loads(path.read_text("utf-8"))
        listed = manifest["files"]
        assert isinstance(listed, dict)
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
        raise ArtifactError(f"artifact {directory}: {MANIFEST} is unreadable or corrupt") from None
    for required in (WEIGHTS, CONFIG, METRICS, FINGERPRINT):
        if required not in listed:
            raise ArtifactError(f"artifact {directory}: {MANIFEST} does not list {required}")
    return listed


def verify_artifact(directory: str | os.PathLike) -> dict[str, bytes]:
    """Check every file against the manifest; return {name: bytes} of the verified contents.

    Raises ArtifactError naming the first missing, resized or changed file.
    """
    directory = Path(directory)
    listed = _read_manifest(directory)
    contents: dict[str, bytes] = {}
    for name, entry in listed.items():
        if not isinstance(entry, dict) or not _SAFE_NAME.match(str(name)):
            raise ArtifactError(f"artifact {directory}: bad {MANIFEST} entry {name!r}")
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"artifact {directory}: file {name} is missing")
        data = path.read_bytes()
        if len(data) != entry.get("bytes") or _sha256(data) != entry.get("sha256"):
            raise ArtifactError(
                f"artifact {directory}: file {name} is corrupt or was modified (sha256 mismatch)"
            )
        contents[name] = data
    return contents


def load_artifact(directory: str | os.PathLike) -> Artifact:
    """Verify the manifest and load an artifact; raise ArtifactError if anything is wrong.

    Tensors are parsed from the same bytes that were hashed, so a file changed after the check
    cannot slip in.
    """
    from safetensors.torch import load as safetensors_load

    directory = Path(directory)
    if not directory.exists():
        recover_artifact(directory)  # a save interrupted between its two renames
    contents = verify_artifact(directory)
    try:
        tensors = safetensors_load(contents.pop(WEIGHTS))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(
            f"artifact {directory}: {WEIGHTS} is not valid safetensors ({e})"
        ) from None
    try:
        config = json.loads(contents.pop(CONFIG))
        metrics = json.loads(contents.pop(METRICS))
        data_fingerprint = contents.pop(FINGERPRINT).decode("utf-8").strip()
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"artifact {directory}: unreadable config or metrics ({e})") from None
    return Artifact(directory, tensors, config, metrics, data_fingerprint, contents)


def sanity_check(outputs: Any, expected_order: Sequence[int] | None = None) -> None:
    """Refuse a model whose outputs on golden inputs are non-finite or in the wrong order.

    Args:
        outputs: model outputs on a fixed set of golden inputs (tensor or array, any shape).
        expected_order: optional indices into the flattened outputs, from the input expected to
            score highest to the one expected to score lowest; the outputs at those indices must
            be strictly decreasing (a constant model fails).

    Raises:
        ArtifactError with a one-line reason.
    """
    if hasattr(outputs, "detach"):
        outputs = outputs.detach().cpu().numpy()
    out = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if out.size == 0:
        raise ArtifactError("sanity check failed: the model produced no outputs")
    bad = int((~np.isfinite(out)).sum())
    if bad:
        raise ArtifactError(f"sanity check failed: {bad} of {out.size} outputs are NaN or infinite")
    if expected_order is not None:
        idx = np.asarray(expected_order, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= out.size):
            raise ArtifactError("sanity check failed: expected_order indexes past the outputs")
        vals = out[idx]
        wrong = np.nonzero(np.diff(vals) >= 0)[0]
        if wrong.size:
            i = int(wrong[0])
            raise ArtifactError(
                f"sanity check failed: golden input {int(idx[i + 1])} scored {vals[i + 1]:.4g}, "
                f"not below input {int(idx[i])} ({vals[i]:.4g})"
            )


def artifact_hash(directory: str | os.PathLike) -> str:
    """sha256 of an artifact's MANIFEST.json: one hash that names every file's contents.

    Two artifacts with the same hash hold the same bytes (the manifest lists each file's sha256).
    Raises ArtifactError if the folder has no manifest.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"artifact {directory} has no {MANIFEST}")
    return _sha256(path.read_bytes())


@dataclass
class PromotionDecision:
    """The promotion check's verdict and the reasons for it, one line each."""

    promote: bool
    reasons: list[str]

    def __bool__(self) -> bool:
        return self.promote

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": list(self.reasons)}


def promotion_check(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    champion: Mapping[str, float] | None,
    tolerance: float = 0.02,
    higher_is_better: bool = True,
) -> PromotionDecision:
    """Promote iff the candidate beats the baseline and does not lose much to the champion.

    Each dict maps a cohort name ("all", "new_users", ...) to one metric value.
    Rules (sign = +1 if higher is better, else -1):
      1. sign * (candidate["all"] - baseline["all"]) > 0  (strictly beats the baseline overall);
      2. for every cohort c of the champion: sign * (champion[c] - candidate[c]) <= tolerance
         (absolute), and the candidate must report c.
    With no champion (first model) only rule 1 applies.
    """
    if "all" not in candidate or "all" not in baseline:
        raise CasebookError("promotion_check needs an 'all' entry in candidate and baseline")
    sign = 1.0 if higher_is_better else -1.0
    reasons: list[str] = []
    ok = True
    c_all, b_all = float(candidate["all"]), float(baseline["all"])
    if not (math.isfinite(c_all) and sign * (c_all - b_all) > 0):
        ok = False
        reasons.append(f"does not beat the baseline on all: {c_all:.4g} vs {b_all:.4g}")
    else:
        reasons.append(f"beats the baseline on all: {c_all:.4g} vs {b_all:.4g}")
    if champion is None:
        reasons.append("no champion yet")
    else:
        for cohort, champ_value in champion.items():
            if cohort not in candidate:
                ok = False
                reasons.append(f"candidate has no value for champion cohort {cohort!r}")
                continue
            cand = float(candidate[cohort])
            loss = sign * (float(champ_value) - cand)
            if not math.isfinite(cand) or loss > tolerance + 1e-12:
                ok = False
                reasons.append(
                    f"loses {loss:.4g} to the champion on {cohort} "
                    f"({cand:.4g} vs {float(champ_value):.4g}; tolerance {tolerance:g})"
                )
        if ok:
            reasons.append(f"within {tolerance:g} of the champion on every cohort")
    return PromotionDecision(ok, reasons)


class Registry:
    """Versions of one model plus the `champion` and `previous` aliases (see the module doc)."""

    ALIASES = ("champion", "previous")

    LOCK = "registry.lock"

    def __init__(self, root: str | os.PathLike, lock_timeout_s: float = REGISTRY_LOCK_TIMEOUT_S):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.aliases_path = self.root / "aliases.json"
        self.lock_timeout_s = lock_timeout_s
        self._lock: FileLock | None = None
        self._lock_pid = 0

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's write lock (another process or thread waits, up to
        `lock_timeout_s`, then ArtifactError). Re-entrant within a thread, so a caller can hold
        it across register + compare + promote (`shared.lifecycle.register_and_promote`)."""
        if self._lock is None or self._lock_pid != os.getpid():  # filelock refuses a forked copy
            self.root.mkdir(parents=True, exist_ok=True)
            # thread_local: each thread holds its own descriptor, so two threads sharing this
            # Registry exclude each other as two processes do.
            self._lock = FileLock(
                self.root / self.LOCK, timeout=self.lock_timeout_s, thread_local=True
            )
            self._lock_pid = os.getpid()
        try:
            self._lock.acquire()
        except Timeout:
            raise ArtifactError(
                f"registry {self.root}: another run has held {self.LOCK} for over "
                f"{self.lock_timeout_s:g} s"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def versions(self) -> list[str]:
        """Registered version names, sorted (hidden staging folders are never versions)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.versions_dir.iterdir()
            if _SAFE_NAME.match(p.name) and p.is_dir() and (p / MANIFEST).is_file()
        )

    def recover(self, stale_after_s: float = STALE_TMP_S) -> list[str]:
        """Remove what crashed writes left (hidden staging folders and temporary alias files
        older than `stale_after_s`); return one line per removal (also logged)."""
        done: list[str] = []
        leftovers = []
        if self.versions_dir.is_dir():
            leftovers += [p for p in self.versions_dir.iterdir() if p.name.startswith(".")]
        if self.root.is_dir():
            leftovers += list(self.root.glob(".*.tmp"))
        for path in leftovers:
            if ".tmp" in path.name and _is_stale(path, stale_after_s):
                _remove(path)
                done.append(f"removed {path.name} (left by an interrupted write)")
        for line in done:
            logger.warning("registry %s: %s", self.root, line)
        return done

    def aliases(self) -> dict[str, str]:
        """The alias map, e.g. {"champion": "v0002", "previous": "v0001"} ({} when none)."""
        if not self.aliases_path.is_file():
            return {}
        try:
            data = json.loads(self.aliases_path.read_text("utf-8"))
        except ValueError:
            raise ArtifactError(f"registry {self.root}: aliases.json is corrupt") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"registry {self.root}: aliases.json is corrupt")
        return {str(k): str(v) for k, v in data.items() if v}

    def _next_name(self) -> str:
        numbers = [int(n[1:]) for n in self.versions() if re.fullmatch(r"v\d+", n)]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(self, artifact_dir: str | os.PathLike, name: str | None = None) -> Path:
        """Copy a verified artifact into the registry as a new version; return its path.

        The default name is the next `v0001`, `v0002`, ... A corrupt artifact is refused.
        """
        src = Path(artifact_dir)
        verify_artifact(src)
        with self.lock():  # the next name is taken and filled under one lock
            return self._register_locked(src, name)

    def _register_locked(self, src: Path, name: str | None) -> Path:
        name = name or self._next_name()
        if not _SAFE_NAME.match(name) or name in self.ALIASES:
            raise ArtifactError(f"bad version name {name!r}")
        dst = self.versions_dir / name
        if dst.exists():
            raise ArtifactError(f"registry {self.root}: version {name} already exists")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        with staged(dst) as tmp:
            # File by file, each fsynced (shutil.copytree does not): the version must be on
            # disk before its name is, or a power cut could leave a named, empty version.
            tmp.mkdir()
            for path in sorted(src.iterdir()):
                if path.is_file():
                    _write_file(tmp / path.name, path.read_bytes())
                    crash_point(f"register {name}: {path.name} copied")
            _fsync_dir(tmp)
            verify_artifact(tmp)  # the copy itself, before it becomes visible
            os.replace(tmp, dst)
            _fsync_dir(self.versions_dir)
            crash_point(f"register {name}: in place")
        return dst

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        atomic_write_json(self.aliases_path, {k: v for k, v in aliases.items() if v})

    def promote(self, version: str, force: bool = False) -> None:
        """Make `version` the champion; the old champion becomes `previous`.

        The version must exist and pass verification (a corrupt artifact is never promoted).
        `force=True` is the operator's override of the golden-set check (shared.golden): it is
        recorded as `"forced": version` in aliases.json, and serving then loads that version
        without the golden check (logging that it does); the sha256 check still applies. A
        plain promote clears the mark.
        """
        path = self.versions_dir / version
        if not path.is_dir():  # a registered version is never removed: safe to ask unlocked
            raise ArtifactError(f"registry {self.root}: no version {version!r}")
        verify_artifact(path)
        with self.lock():  # read, change and write aliases.json as one step
            self._promote_locked(version, force)

    def _promote_locked(self, version: str, force: bool) -> None:
        aliases = self.aliases()
        old = aliases.get("champion")
        marked = aliases.get("forced") == version
        if force:
            aliases["forced"] = version
        else:
            aliases.pop("forced", None)
        if old == version:
            if force != marked:
                self._write_aliases(aliases)
            return
        aliases["champion"] = version
        if old:
            aliases["previous"] = old
        self._write_aliases(aliases)

    def rollback(self) -> str:
        """Swap champion and previous; return the new champion's name."""
        with self.lock():
            return self._rollback_locked()

    def _rollback_locked(self) -> str:
        aliases = self.aliases()
        prev, champ = aliases.get("previous"), aliases.get("champion")
        if not prev:
            raise ArtifactError(f"registry {self.root}: nothing to roll back to (no 'previous')")
        aliases["champion"] = prev
        if champ:
            aliases["previous"] = champ
        self._write_aliases(aliases)
        return prev

    def resolve(self, alias: str = "champion") -> Path:
        """Path of the version an alias points to (a version name is accepted too)."""
        aliases = self.aliases()
        name = aliases.get(alias)
        if name is None:
            if alias in self.ALIASES:
                raise ArtifactError(f"registry {self.root} has no {alias!r} alias")
            name = alias
        path = self.versions_dir / name
        if not path.is_dir():
            raise ArtifactError(f"registry {self.root}: {alias!r} points to missing version {name}")
        return path


def load_with_fallback(
    registry_root: str | os.PathLike, loader: Callable[[Path], T]
) -> tuple[T, str]:
    """Load the champion with `loader(path)`; if it is refused, load `previous`.

    Any exception from `loader` (ArtifactError from a corrupt file, a failed sanity check, a
    shape mismatch) refuses that version; the reason is logged as a warning on the "casebook"
    logger. If `registry_root` is itself an artifact folder (has a MANIFEST.json), it is loaded
    directly and the alias returned is "artifact".

    Returns:
        (loaded model, alias used: "champion", "previous" or "artifact").
    Raises:
        ArtifactError if nothing could be loaded, with each reason.
    """
    root = Path(registry_root)
    if (root / MANIFEST).is_file():
        return loader(root), "artifact"
    registry = Registry(root)
    if not registry.aliases_path.is_file():
        raise ArtifactError(f"{root} is neither an artifact nor a registry (no aliases.json)")
    failures = []
    for alias in Registry.ALIASES:
        try:
            path = registry.resolve(alias)
            return loader(path), alias
        except Exception as e:
            msg = first_line(e)
            logger.warning("refused the %s model: %s", alias, msg)
            failures.append(f"{alias}: {msg}")
    raise ArtifactError(f"no loadable model in registry {root} ({'; '.join(failures)})")
