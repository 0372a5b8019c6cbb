"""Crash mid-save: a process killed at every step of saving, registering and promoting an
artifact leaves a registry of whole artifacts, a champion that loads, and an artifact folder that
is either the old one or the new one (issue 17).

The child is a fork of the test process (a fresh interpreter would spend seconds importing torch
per step); `shared.io.crash_point` ends it with `os._exit` at step N, like a kill -9.
"""

import os

import numpy as np
import pytest
import torch

from shared.artifacts import (
    Registry,
    fingerprint_arrays,
    load_artifact,
    recover_artifact,
    save_artifact,
)
from shared.io import CRASH_EXIT_CODE, atomic_write_json, reset_crash_points

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _save(path, scale):
    return save_artifact(
        path,
        {"w": torch.full((4, 3), float(scale))},
        config={"scale": scale},
        metrics={"auc": 0.5 + scale / 10},
        data_fingerprint=fingerprint_arrays(np.arange(5)),
        files={"vocab.txt": b"a\nb\n"},
    )


def _in_child(fn, step: int) -> int:
    """Run fn() in a forked child that crashes at crash point `step`; return its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.environ["CASEBOOK_CRASH_AT"] = str(step)
            reset_crash_points()
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _retrain(art, registry):
    """What a retraining run does: save over the artifact, register it, promote it."""
    _save(art, 2)
    version = registry.register(art).name
    registry.promote(version)


def test_a_crash_at_every_step_leaves_only_whole_artifacts(tmp_path):
    crashed_at = []
    for step in range(1, 60):
        base = tmp_path / f"step{step}"
        art = base / "artifact"
        registry = Registry(base / "registry")
        _save(art, 1)
        registry.promote(registry.register(art).name)

        code = _in_child(lambda art=art, registry=registry: _retrain(art, registry), step)
        assert code in (0, CRASH_EXIT_CODE), f"step {step}: the child failed ({code})"

        # What a later process sees: recovery runs on load (and on the next save/register).
        registry.recover(stale_after_s=0)
        recover_artifact(art, stale_after_s=0)
        assert load_artifact(art).config["scale"] in (1, 2), f"step {step}"
        assert not list(base.glob("artifact.old-*")) and not list(base.glob(".artifact.tmp-*"))
        versions = registry.versions()
        assert versions and versions[0] == "v0001"
        for v in versions:
            load_artifact(registry.versions_dir / v)  # every listed version is whole
        assert not [p for p in registry.versions_dir.iterdir() if p.name.startswith(".")]
        champion = load_artifact(registry.resolve("champion"))
        assert champion.config["scale"] in (1, 2)
        if code == 0:  # no crash point left: every step has been covered
            assert champion.config["scale"] == 2 and versions == ["v0001", "v0002"]
            break
        crashed_at.append(step)
    else:
        pytest.fail("the save never completed within 60 crash points")
    # 6 artifact files + manifest + rename aside + in place + done, 6 copies + in place, aliases 2
    assert len(crashed_at) >= 15


def test_crash_between_the_two_renames_is_restored_on_load(tmp_path):
    art = _save(tmp_path / "artifact", 1)
    # Crash points of a replace: 5 files, manifest, then step 7 = "old copy renamed aside".
    assert _in_child(lambda: _save(art, 2), 7) == CRASH_EXIT_CODE
    assert not art.exists() and len(list(tmp_path.glob("artifact.old-*"))) == 1
    assert load_artifact(art).config["scale"] == 1  # renamed back by load_artifact
    assert not list(tmp_path.glob("artifact.old-*"))


def test_a_fresh_staging_folder_is_left_alone(tmp_path):
    """Recovery removes only stale staging folders: a save in progress elsewhere is not touched."""
    art = _save(tmp_path / "artifact", 1)
    busy = tmp_path / ".artifact.tmp-0000beef"
    busy.mkdir()
    assert recover_artifact(art) == []
    assert busy.exists()
    assert recover_artifact(art, stale_after_s=0) and not busy.exists()


def test_atomic_write_crash_keeps_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "aliases.json", {"champion": "v0001"})
    assert _in_child(lambda: atomic_write_json(path, {"champion": "v0002"}), 1) == CRASH_EXIT_CODE
    assert path.read_text().strip().endswith("}")
    assert "v0001" in path.read_text()
    registry = Registry(tmp_path)
    assert registry.recover(stale_after_s=0)  # the temporary file is removed
    assert [p.name for p in tmp_path.iterdir()] == ["aliases.json"]
