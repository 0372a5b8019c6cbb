"""Artifacts: manifest verification, atomic saves, the promotion check, registry aliases."""

import json
import logging
import os

import numpy as np
import pytest
import torch

from shared import artifacts
from shared.artifacts import (
    Registry,
    fingerprint_arrays,
    load_artifact,
    load_with_fallback,
    promotion_check,
    sanity_check,
    save_artifact,
)
from shared.errors import ArtifactError


def _save(path, scale=1.0):
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3) * scale, "b": torch.ones(3)}
    return save_artifact(
        path,
        tensors,
        config={"hidden": 3, "scale": scale},
        metrics={"auc": 0.9, "nan_metric": float("nan")},
        data_fingerprint=fingerprint_arrays(np.arange(10)),
        files={"vocab.txt": b"a\nb\n"},
    )


def _flip_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path):
    path = _save(tmp_path / "model")
    art = load_artifact(path)
    assert torch.equal(art.tensors["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert art.config == {"hidden": 3, "scale": 1.0}
    assert art.metrics == {"auc": 0.9, "nan_metric": None}
    assert art.data_fingerprint == fingerprint_arrays(np.arange(10))
    assert art.files == {"vocab.txt": b"a\nb\n"}
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {
        "weights.safetensors",
        "config.json",
        "metrics.json",
        "fingerprint",
        "vocab.txt",
    }
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_fingerprint_depends_on_values_dtype_and_shape():
    a = np.arange(6)
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert fingerprint_arrays(a) != fingerprint_arrays(a.astype(np.int32))
    assert fingerprint_arrays(a) != fingerprint_arrays(a.reshape(2, 3))
    assert fingerprint_arrays(a) != fingerprint_arrays(a + 1)
    assert fingerprint_arrays(torch.arange(6)) == fingerprint_arrays(np.arange(6))


def test_flipped_byte_in_weights_is_refused_naming_the_file(tmp_path):
    path = _save(tmp_path / "model")
    _flip_byte(path / "weights.safetensors")
    with pytest.raises(ArtifactError, match=r"weights\.safetensors.*corrupt"):
        load_artifact(path)


@pytest.mark.parametrize("name", ["config.json", "vocab.txt", "weights.safetensors"])
def test_missing_file_is_refused(tmp_path, name):
    path = _save(tmp_path / "model")
    (path / name).unlink()
    with pytest.raises(ArtifactError, match=f"{name} is missing"):
        load_artifact(path)


def test_missing_manifest_and_missing_folder(tmp_path):
    path = _save(tmp_path / "model")
    (path / "MANIFEST.json").unlink()
    with pytest.raises(ArtifactError, match="MANIFEST"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nothing")


def test_tampered_config_is_refused(tmp_path):
    path = _save(tmp_path / "model")
    (path / "config.json").write_text('{"hidden": 4096}')
    with pytest.raises(ArtifactError, match="config.json"):
        load_artifact(path)


def test_crash_mid_save_leaves_previous_artifact_intact(tmp_path, monkeypatch):
    path = _save(tmp_path / "model", scale=1.0)
    real_write = artifacts._write_file

    def crash(p, data):
        if p.name == "config.json":
            raise OSError("disk full (simulated)")
        real_write(p, data)

    monkeypatch.setattr(artifacts, "_write_file", crash)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path / "model", scale=2.0)
    monkeypatch.undo()
    art = load_artifact(path)
    assert art.config["scale"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder left


def test_overwrite_replaces_whole_artifact(tmp_path):
    _save(tmp_path / "model", scale=1.0)
    _save(tmp_path / "model", scale=3.0)
    assert load_artifact(tmp_path / "model").config["scale"] == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_sanity_check():
    sanity_check(torch.tensor([0.9, 0.5, 0.1]), expected_order=[0, 1, 2])
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        sanity_check(np.array([0.1, np.nan]))
    with pytest.raises(ArtifactError, match="golden input 2"):
        sanity_check(np.array([0.9, 0.1, 0.5]), expected_order=[0, 1, 2])
    with pytest.raises(ArtifactError):
        sanity_check(np.array([0.5, 0.5]), expected_order=[0, 1])  # a constant model fails


def test_promotion_check_cases():
    base = {"all": 0.50}
    champ = {"all": 0.60, "new_users": 0.40}
    # First model: beats the baseline, no champion.
    assert promotion_check({"all": 0.55}, base, None).promote
    # Does not beat the baseline.
    d = promotion_check({"all": 0.50, "new_users": 0.5}, base, champ)
    assert not d.promote and any("baseline" in r for r in d.reasons)
    # Better overall but loses 0.05 on a cohort: refused, the cohort is named.
    d = promotion_check({"all": 0.65, "new_users": 0.35}, base, champ, tolerance=0.02)
    assert not d.promote and any("new_users" in r for r in d.reasons)
    # Loses within tolerance: promoted.
    assert promotion_check({"all": 0.59, "new_users": 0.39}, base, champ, tolerance=0.02).promote
    # Missing cohort: refused.
    assert not promotion_check({"all": 0.7}, base, champ).promote
    # Lower is better (a loss): 0.30 beats 0.40; the champion's 0.28 is within 0.02.
    assert promotion_check({"all": 0.30}, {"all": 0.40}, {"all": 0.28}, higher_is_better=False)
    assert not promotion_check(
        {"all": 0.35}, {"all": 0.40}, {"all": 0.28}, higher_is_better=False
    ).promote


def test_registry_promote_and_rollback(tmp_path):
    reg = Registry(tmp_path / "registry")
    v1 = reg.register(_save(tmp_path / "a", scale=1.0))
    v2 = reg.register(_save(tmp_path / "b", scale=2.0))
    assert (v1.name, v2.name) == ("v0001", "v0002")
    assert reg.versions() == ["v0001", "v0002"]
    with pytest.raises(ArtifactError, match="no 'champion'"):
        reg.resolve()
    reg.promote("v0001")
    assert reg.aliases() == {"champion": "v0001"}
    reg.promote("v0002")
    assert reg.aliases() == {"champion": "v0002", "previous": "v0001"}
    assert load_artifact(reg.resolve()).config["scale"] == 2.0
    assert reg.rollback() == "v0001"
    assert reg.aliases() == {"champion": "v0001", "previous": "v0002"}
    with pytest.raises(ArtifactError, match="no version"):
        reg.promote("v0009")


def test_registry_refuses_corrupt_artifacts(tmp_path):
    reg = Registry(tmp_path / "registry")
    src = _save(tmp_path / "a")
    _flip_byte(src / "weights.safetensors")
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        reg.register(src)
    good = reg.register(_save(tmp_path / "b"))
    _flip_byte(good / "config.json", offset=2)
    with pytest.raises(ArtifactError, match="config.json"):
        reg.promote(good.name)
    assert reg.aliases() == {}


def test_crash_mid_alias_write_leaves_aliases_intact(tmp_path, monkeypatch):
    reg = Registry(tmp_path / "registry")
    reg.register(_save(tmp_path / "a"))
    reg.register(_save(tmp_path / "b"))
    reg.promote("v0001")
    before = reg.aliases_path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        reg.promote("v0002")
    monkeypatch.undo()
    assert reg.aliases_path.read_bytes() == before
    assert reg.aliases() == {"champion": "v0001"}
    assert [p.name for p in reg.root.iterdir() if p.name.startswith(".")] == []


def test_load_with_fallback_uses_previous_when_champion_corrupt(tmp_path, caplog):
    reg = Registry(tmp_path / "registry")
    reg.register(_save(tmp_path / "a", scale=1.0))
    reg.register(_save(tmp_path / "b", scale=2.0))
    reg.promote("v0001")
    reg.promote("v0002")
    art, alias = load_with_fallback(reg.root, load_artifact)
    assert alias == "champion" and art.config["scale"] == 2.0

    _flip_byte(reg.resolve("champion") / "weights.safetensors")
    with caplog.at_level(logging.WARNING, logger="casebook"):
        art, alias = load_with_fallback(reg.root, load_artifact)
    assert alias == "previous" and art.config["scale"] == 1.0
    assert "champion" in caplog.text and "weights.safetensors" in caplog.text

    _flip_byte(reg.resolve("previous") / "weights.safetensors")
    with pytest.raises(ArtifactError, match="no loadable model"):
        load_with_fallback(reg.root, load_artifact)


def test_load_with_fallback_accepts_a_plain_artifact(tmp_path):
    path = _save(tmp_path / "model")
    art, alias = load_with_fallback(path, load_artifact)
    assert alias == "artifact" and art.config["hidden"] == 3
