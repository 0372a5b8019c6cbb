"""The shared lifecycle: run folders, registry roots, torch threads, register-and-promote."""

from __future__ import annotations

import json

import pytest
import torch

from shared.artifacts import Registry, artifact_hash, save_artifact
from shared.errors import ArtifactError, CasebookError
from shared.lifecycle import (
    read_record,
    record_path,
    register_and_promote,
    registry_root,
    run_folder,
    torch_threads,
)

FP = "a" * 64


def _artifact(tmp_path, name, value=1.0, fp=FP):
    return save_artifact(
        tmp_path / name, {"w": torch.full((3,), value)}, {"k": value}, {"m": value}, fp
    )


def _promote(tmp_path, name, cand, base=0.2, fp=FP, seed=0, **kw):
    art = _artifact(tmp_path, name, fp=fp)
    return register_and_promote(
        art,
        tmp_path / "registry",
        metric="top1",
        candidate=cand,
        baseline={"all": base},
        fingerprint=fp,
        preset="fast",
        seed=seed,
        **kw,
    )


def test_run_folder_default_and_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = run_folder("demo-case", None)
    b = run_folder("demo-case", None)
    assert a.is_dir() and b.is_dir() and a != b  # same second: a fresh folder each time
    assert a.parent == tmp_path.joinpath("runs", "demo-case").relative_to(tmp_path)
    assert registry_root(a, "demo-case") == a.parent / "registry"
    out = run_folder("demo-case", tmp_path / "x" / "y")
    assert out.is_dir() and registry_root(out, "demo-case") == out / "registry"


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(0):
        assert torch.get_num_threads() == 1  # 0 means 1, never "all cores"
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_first_model_promoted_when_it_beats_the_baseline(tmp_path):
    p = _promote(tmp_path, "a1", {"all": 0.5, "new": 0.4})
    assert p.promoted and p.version == "v0001" and p.champion is None and p.error is None
    assert p.reasons == ["top1: beats the baseline on all: 0.5 vs 0.2", "top1: no champion yet"]
    reg = Registry(tmp_path / "registry")
    assert reg.aliases() == {"champion": "v0001"}
    rec = read_record(reg.root, "v0001")
    assert rec["candidate"] == {"all": 0.5, "new": 0.4}
    assert rec["fingerprint"] == FP and rec["preset"] == "fast" and rec["seed"] == 0
    assert rec["artifact_sha256"] == artifact_hash(reg.versions_dir / "v0001")
    # The record lives beside the version, not inside the (immutable) artifact.
    assert not (reg.versions_dir / "v0001" / "record.json").exists()
    assert "promoted to champion" in p.markdown()
    assert json.dumps(p.to_dict())


def test_not_promoted_when_it_does_not_beat_the_baseline(tmp_path):
    p = _promote(tmp_path, "a1", {"all": 0.2}, base=0.2)
    assert not p.promoted and p.error is None
    assert any("does not beat the baseline" in r for r in p.reasons)
    assert Registry(tmp_path / "registry").aliases() == {}


def test_same_fingerprint_champion_is_compared_with_its_own_record(tmp_path):
    assert _promote(tmp_path, "a1", {"all": 0.5, "new": 0.4}).promoted
    # Loses 0.1 on the champion's "new" cohort: refused, champion unchanged.
    p = _promote(tmp_path, "a2", {"all": 0.55, "new": 0.3})
    assert not p.promoted and p.compared and p.champion == "v0001"
    assert any("loses" in r and "new" in r for r in p.reasons)
    assert Registry(tmp_path / "registry").aliases()["champion"] == "v0001"
    # Within tolerance everywhere: promoted, the old champion becomes previous.
    p = _promote(tmp_path, "a3", {"all": 0.49, "new": 0.39})
    assert p.promoted and p.compared
    assert Registry(tmp_path / "registry").aliases() == {"champion": "v0003", "previous": "v0001"}


def test_other_fingerprint_is_not_compared_and_the_report_says_so(tmp_path):
    assert _promote(tmp_path, "a1", {"all": 0.9}).promoted
    # Far below the champion, but on other data (another seed): only the baseline rule applies.
    p = _promote(tmp_path, "a2", {"all": 0.3}, fp="b" * 64, seed=1)
    assert p.promoted and not p.compared and p.error is None
    assert any("other data" in r and "not compared" in r for r in p.reasons)
    assert not any("no champion" in r for r in p.reasons)  # there is one; it was not compared


@pytest.mark.parametrize("damage", ["artifact", "record", "no_record"])
def test_unreadable_champion_is_an_error_never_a_silent_pass(tmp_path, damage):
    assert _promote(tmp_path, "a1", {"all": 0.5}).promoted
    root = tmp_path / "registry"
    if damage == "artifact":
        (root / "versions" / "v0001" / "weights.safetensors").write_bytes(b"garbage")
    elif damage == "record":
        record_path(root, "v0001").write_text("{not json")
    else:
        record_path(root, "v0001").unlink()
    p = _promote(tmp_path, "a2", {"all": 0.9})
    assert not p.promoted and p.error and "champion v0001 is unreadable" in p.error
    assert any(r.startswith("error:") for r in p.reasons)
    assert "Error" in p.markdown()
    assert Registry(root).aliases() == {"champion": "v0001"}
    assert record_path(root, "v0002").is_file()  # registered and recorded all the same


def test_loader_refusing_the_candidate_blocks_promotion(tmp_path):
    def loader(path):
        raise ArtifactError("sanity check failed: constant model")

    p = _promote(tmp_path, "a1", {"all": 0.9}, loader=loader)
    assert not p.promoted and "does not load" in p.error


def test_bad_figures_and_corrupt_artifact_are_refused(tmp_path):
    with pytest.raises(CasebookError, match="'all'"):
        _promote(tmp_path, "a1", {"new": 0.5})
    with pytest.raises(CasebookError, match="not finite"):
        _promote(tmp_path, "a2", {"all": float("nan")})
    art = _artifact(tmp_path, "a3")
    (art / "config.json").write_text("{}")
    with pytest.raises(ArtifactError):
        register_and_promote(
            art,
            tmp_path / "registry",
            metric="top1",
            candidate={"all": 0.5},
            baseline={"all": 0.1},
            fingerprint=FP,
            preset="fast",
            seed=0,
        )
    assert Registry(tmp_path / "registry").versions() == []
