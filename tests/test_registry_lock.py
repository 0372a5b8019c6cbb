"""Two runs writing one registry at once (issue 26): `runs/<case>/registry` is shared by default
runs, so registrations and promotions may overlap. Each must get its own version name and no
alias update may be lost (shared.artifacts.Registry.lock, a filelock on `registry.lock`).

A short sleep is put inside each read-then-write (after the next name is computed, after
aliases.json is read) so that, without the lock, the writers interleave there every time:
the same name twice (the second rename fails) and an alias write that drops the other's."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch

from shared.artifacts import Registry, fingerprint_arrays, load_artifact, save_artifact

WRITERS = 4
DELAY_S = 0.05  # inside the critical section: wide enough that unlocked writers always meet


def _save(path, scale: float):
    return save_artifact(
        path,
        {"w": torch.full((2, 3), scale)},
        config={"scale": scale},
        metrics={"auc": 0.9},
        data_fingerprint=fingerprint_arrays(np.arange(10)),
    )


@pytest.fixture
def slow_read_then_write(monkeypatch):
    """Delay every registry read-then-write and log every aliases.json write, in order."""
    next_name, aliases, write = Registry._next_name, Registry.aliases, Registry._write_aliases
    writes: list[dict] = []
    guard = threading.Lock()

    def slow_next_name(self):
        name = next_name(self)
        time.sleep(DELAY_S)
        return name

    def slow_aliases(self):
        out = aliases(self)
        time.sleep(DELAY_S)
        return out

    def logged_write(self, a):
        with guard:
            writes.append(dict(a))
        write(self, a)

    monkeypatch.setattr(Registry, "_next_name", slow_next_name)
    monkeypatch.setattr(Registry, "aliases", slow_aliases)
    monkeypatch.setattr(Registry, "_write_aliases", logged_write)
    return writes


def _check_chain(writes: list[dict], names: set[str]) -> None:
    """Each promotion saw the one before it: its `previous` is the last write's champion."""
    assert [w["champion"] for w in writes] and {w["champion"] for w in writes} == names
    assert "previous" not in writes[0]
    for before, after in zip(writes, writes[1:], strict=False):
        assert after.get("previous") == before["champion"], f"lost update: {before} -> {after}"


def test_concurrent_threads_register_distinct_versions_and_keep_aliases_whole(
    tmp_path, slow_read_then_write
):
    arts = [_save(tmp_path / f"a{i}", float(i)) for i in range(WRITERS)]
    root = tmp_path / "registry"
    got: list[str] = []
    errors: list[BaseException] = []
    start, registered = threading.Barrier(WRITERS), threading.Barrier(WRITERS)

    def run(art) -> None:
        reg = Registry(root)  # one per writer, as two runs have
        start.wait()
        try:
            name = reg.register(art).name
            registered.wait()  # the promotions start together too
            reg.promote(name)
            got.append(name)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            registered.abort()

    threads = [threading.Thread(target=run, args=(a,)) for a in arts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, f"{len(errors)} writer(s) failed, first: {errors[0]!r}"
    names = {f"v{i:04d}" for i in range(1, WRITERS + 1)}
    reg = Registry(root)
    assert set(got) == names and set(reg.versions()) == names
    # Each version holds the artifact its writer registered (no two writers shared a folder).
    scales = {load_artifact(reg.resolve(v)).config["scale"] for v in names}
    assert scales == {float(i) for i in range(WRITERS)}
    _check_chain(slow_read_then_write, names)
    final = reg.aliases()
    assert final == slow_read_then_write[-1]
    assert final["champion"] != final["previous"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_concurrent_processes_register_distinct_versions(tmp_path, slow_read_then_write):
    arts = [_save(tmp_path / f"a{i}", float(i)) for i in range(2)]
    root = tmp_path / "registry"
    go = tmp_path / "go"
    pids = []
    for art in arts:
        pid = os.fork()
        if pid == 0:  # a second run: never returns into pytest
            code = 1
            try:
                while not go.exists():  # both start together
                    time.sleep(0.001)
                reg = Registry(root)
                reg.promote(reg.register(art).name)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    go.touch()
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0], "a registering process failed"
    reg = Registry(root)
    assert reg.versions() == ["v0001", "v0002"]
    a = reg.aliases()
    assert {a["champion"], a["previous"]} == {"v0001", "v0002"}  # the second saw the first


def test_concurrent_register_and_promote_compare_with_each_other(tmp_path, monkeypatch):
    """Two runs' register_and_promote at once: the second to take the lock compares with the
    champion the first promoted, not with the empty registry both saw at the start."""
    import shared.lifecycle as lifecycle

    hash_of = lifecycle.artifact_hash

    def slow_hash(path):  # between reading the champion and promoting
        time.sleep(DELAY_S)
        return hash_of(path)

    monkeypatch.setattr(lifecycle, "artifact_hash", slow_hash)
    arts = [_save(tmp_path / f"a{i}", float(i)) for i in range(2)]
    out: list = []
    start = threading.Barrier(2)

    def run(art) -> None:
        start.wait()
        out.append(
            lifecycle.register_and_promote(
                art,
                tmp_path / "registry",
                metric="top1",
                candidate={"all": 0.5},
                baseline={"all": 0.1},
                fingerprint="f" * 64,
                preset="fast",
                seed=0,
            )
        )

    threads = [threading.Thread(target=run, args=(a,)) for a in arts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == 2
    first, second = sorted(out, key=lambda p: p.version)
    assert (first.version, second.version) == ("v0001", "v0002")
    assert first.champion is None and second.champion == "v0001" and second.compared
    assert first.promoted and second.promoted  # equal figures: within the tolerance
    assert Registry(tmp_path / "registry").aliases() == {"champion": "v0002", "previous": "v0001"}
