"""The golden set and the monitor's reference in the artifact (shared.golden): recorded at
training, checked on promotion, at start-up and on reload; the operator's override; the live
monitor's collapse alarm on a model forced past the check. No Ray: ReloadableModel is plain."""

import json

import pytest
import torch
from toy_scorer import ToyScorer, toy_requests

from shared.artifacts import Registry, save_artifact, verify_artifact
from shared.errors import ArtifactError
from shared.golden import (
    GOLDEN,
    REFERENCE,
    check_golden,
    finish_artifact,
    read_reference,
    shuffle_weights,
)
from shared.lifecycle import check_candidate, register_and_promote
from shared.serving import ReloadableModel

FP = "f" * 64


def _artifact(path, w=(1.5, 3.0, 0.5, -0.2), b=-1.0, finish=True):
    save_artifact(path, {"w": torch.tensor(w), "b": torch.tensor([b])}, {}, {}, FP)
    if finish:
        finish_artifact(path, ToyScorer.load, toy_requests(100, 1), toy_requests(1000, 2))
    return path


def test_finish_artifact_records_golden_scores_and_reference(tmp_path):
    art = _artifact(tmp_path / "a")
    files = verify_artifact(art)  # manifest rewritten: still whole
    golden = json.loads(files[GOLDEN])
    assert len(golden["requests"]) == 100 and len(golden["scores"]) == 100
    ref = read_reference(art)
    assert set(ref.features) == {"words", "caps"} and len(ref.scores) == 1000
    line = check_golden(ToyScorer.load(art), art)
    assert line.startswith("golden set: 100 scores reproduced")
    assert check_candidate(art, ToyScorer.load).startswith("golden set: 100 scores")


def test_shuffled_weights_pass_sha256_but_fail_the_golden_set(tmp_path):
    art = _artifact(tmp_path / "a")
    done = shuffle_weights(art, seed=3)
    assert done == ["weights.safetensors: 1 tensors"]  # "b" has one value: left alone
    verify_artifact(art)  # well formed: the manifest check cannot see it
    with pytest.raises(ArtifactError, match=r"golden set: \d+ of 100 scores differ"):
        check_golden(ToyScorer.load(art), art)


def test_a_constant_model_recorded_as_golden_is_refused_as_collapsed(tmp_path):
    art = _artifact(tmp_path / "a")
    # A broken model whose golden scores were recorded from itself (a broken training run):
    # it reproduces them, but their spread collapsed against the reference's.
    const = ToyScorer([0.0] * 4, 2.0)
    golden = json.loads((art / GOLDEN).read_text())
    golden["scores"] = const.observation(golden["requests"])[1]
    from shared.artifacts import rewrite_artifact

    rewrite_artifact(art, {GOLDEN: json.dumps(golden).encode()})
    with pytest.raises(ArtifactError, match="collapsed"):
        check_golden(const, art)


def test_a_model_whose_features_moved_but_not_its_scores_is_refused(tmp_path):
    """A part of the model the scores do not read (smart reply's message tower feeds only the
    `top_score` feature) is covered by the golden features."""
    art = _artifact(tmp_path / "a")
    good = ToyScorer.load(art)
    assert check_golden(good, art).startswith("golden set: 100 scores reproduced")

    class BrokenTower(ToyScorer):
        def observation(self, requests, answers=None):
            f, scores = super().observation(requests, answers)
            return {**f, "caps": [c + 0.5 for c in f["caps"]]}, scores

    with pytest.raises(ArtifactError, match="feature 'caps' .100 of 100 requests"):
        check_golden(BrokenTower(good.w, good.b), art)
    # An artifact recorded before features were: only the scores are compared.
    golden = json.loads((art / GOLDEN).read_text())
    del golden["features"]
    from shared.artifacts import rewrite_artifact

    rewrite_artifact(art, {GOLDEN: json.dumps(golden).encode()})
    assert check_golden(BrokenTower(good.w, good.b), art).startswith("golden set: 100 scores")


def test_no_golden_set_is_served_unchecked(tmp_path):
    art = _artifact(tmp_path / "a", finish=False)
    assert check_golden(ToyScorer.load(art), art) == "none in the artifact"
    m = ReloadableModel(art, ToyScorer.load, monitor="toy")
    assert m.golden == "none in the artifact" and m.monitor is None
    assert m.monitor_status() == {
        "enabled": False,
        "why": "no monitor_reference.json in the artifact",
    }
    m.observe(toy_requests(3), None)  # no monitor: a no-op


def test_promotion_refuses_a_version_that_fails_its_golden_set(tmp_path):
    good = _artifact(tmp_path / "good")
    reg = tmp_path / "registry"
    kw = dict(metric="auc", baseline={"all": 0.5}, fingerprint=FP, preset="fast", seed=0)
    p = register_and_promote(good, reg, candidate={"all": 0.8}, loader=ToyScorer.load, **kw)
    assert p.promoted and any(r.startswith("golden set: 100 scores reproduced") for r in p.reasons)
    bad = _artifact(tmp_path / "bad")
    shuffle_weights(bad, seed=1)
    p = register_and_promote(bad, reg, candidate={"all": 0.9}, loader=ToyScorer.load, **kw)
    assert not p.promoted and "golden set" in p.error and "differ" in p.error
    assert Registry(reg).aliases()["champion"] == "v0001"


def test_reload_refuses_a_broken_champion_then_forced_it_serves_and_the_monitor_fires(tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.register(_artifact(tmp_path / "good")).name)
    m = ReloadableModel(reg.root, ToyScorer.load, monitor="toy")
    assert m.version == "v0001" and m.golden.startswith("golden set: 100")
    assert m.monitor is not None
    for i in range(0, 300, 10):  # traffic like the reference: no alarm
        batch = toy_requests(10, 100 + i)
        m.observe(batch, None)
    assert m.monitor.last["ready"] and m.monitor.last["alarms"] == {}

    # A constant model in a well-formed artifact that keeps the good one's golden set.
    bad = tmp_path / "bad"
    save_artifact(bad, {"w": torch.zeros(4), "b": torch.tensor([3.0])}, {}, {}, FP)
    from shared.artifacts import rewrite_artifact

    good_files = verify_artifact(reg.resolve("champion"))
    rewrite_artifact(bad, {GOLDEN: good_files[GOLDEN], REFERENCE: good_files[REFERENCE]})
    version = reg.register(bad).name
    reg.promote(version)
    res = m.reload()
    assert not res["ok"] and "golden set" in res["error"] and res["serving"] == "v0001"
    assert m.version == "v0001" and "pid" in res

    # The operator forces it: served without the golden check; the monitor catches it.
    reg.promote(version, force=True)
    assert reg.aliases()["forced"] == version
    res = m.reload()
    assert res["ok"] and res["serving"] == version and res["golden"].startswith("skipped")
    n = 0
    while "collapse" not in m.monitor.last["alarms"] and n < 1000:
        m.observe(toy_requests(10, 1000 + n), None)
        n += 10
    assert "collapse" in m.monitor.last["alarms"] and n <= 100  # min_count: the first verdict
    assert any("ALARM collapse" in line for line in m.monitor_status()["alarm_log"])
    # A plain promote clears the override mark.
    reg.promote("v0001")
    assert "forced" not in reg.aliases()


def test_a_champion_failing_its_golden_set_at_start_up_falls_back_to_previous(tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.register(_artifact(tmp_path / "good")).name)
    bad = _artifact(tmp_path / "bad")
    shuffle_weights(bad)
    reg.promote(reg.register(bad).name)
    m = ReloadableModel(reg.root, ToyScorer.load)
    assert m.alias == "previous" and m.version == "v0001"


def test_observe_never_raises(tmp_path):
    art = _artifact(tmp_path / "a")
    m = ReloadableModel(art, ToyScorer.load, monitor="toy")
    m.observe([{"no_text": 1}], None)  # observation raises KeyError: logged, kept
    assert "observe_error" in m.monitor_status()
