"""Atomic file writes: a crash mid-write never leaves a half-written file behind.

Each write goes to a temporary file in the same directory, is flushed and fsynced, then
`os.replace`d over the target; `os.replace` is atomic on POSIX within one filesystem. The folder
is fsynced after the rename, so the new name itself survives a power cut (without it, the data
is on disk but the directory entry may still name the old file).

Crash drills: `crash_point(label)` marks each step of a multi-step write (here, and in
`shared.artifacts`). With the environment variable CASEBOOK_CRASH_AT=N, the N-th crash point
this process reaches ends it on the spot with `os._exit(CRASH_EXIT_CODE)`: no cleanup, no
`finally`, like a kill -9. The tests walk N over every step and check what is left on disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

CRASH_EXIT_CODE = 86  # what a process ended by `crash_point` exits with (tests look for it)
_crash_count = 0


def crash_point(label: str) -> None:
    """Count one step of a write; end the process here if CASEBOOK_CRASH_AT names this step.

    A no-op (one environment read) unless the variable is set. `label` names the step in the
    one line written to stderr before exiting, so a failing drill says where it stopped.
    """
    global _crash_count
    target = os.environ.get("CASEBOOK_CRASH_AT")
    if not target:
        return
    _crash_count += 1
    if str(_crash_count) == target.strip():
        os.write(2, f"casebook: crash drill: exiting at step {_crash_count} ({label})\n".encode())
        os._exit(CRASH_EXIT_CODE)


def reset_crash_points() -> None:
    """Start counting crash points from zero again (a forked test child calls it first)."""
    global _crash_count
    _crash_count = 0


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a folder's entries (a rename, a new file) on POSIX; a no-op where a folder
    cannot be opened for fsync (Windows, some network filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` (not atomically) and fsync it: one file of a staged folder."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def to_jsonable(value: Any) -> Any:
    """numpy/torch scalars to Python numbers, tuples to lists, paths to str, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crash_point(f"{path.name}: temporary file written")
        os.replace(tmp, path)
        crash_point(f"{path.name}: renamed into place")
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically. NaN and infinity are refused (not valid JSON)."""
    return atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    )


@contextlib.contextmanager
def staged(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary sibling of `target` to build it in, removed if the block fails.

    Yields `<dir>/.<name>.tmp-<random><suffix>` (not created). The block writes the file or folder
    there and moves it into place with `os.replace` (atomic on one filesystem); if the block
    raises, whatever it left at the temporary path is deleted and the error propagates.
    """
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}{suffix}"
    try:
        yield tmp
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
