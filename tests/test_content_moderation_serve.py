"""The served moderation app: good requests, every kind of bad input gets a 4xx, and a corrupt
champion is refused on reload while the last good model keeps serving."""

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from cases.content_moderation.data import _SCAM
from cases.content_moderation.predictor import ModerationPredictor
from shared.artifacts import Registry

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def registry(tmp_path_factory, moderation_tiny):
    """A registry whose champion is a tiny TF-IDF + image CNN + hash bank model
    (conftest.moderation_tiny)."""
    reg = Registry(tmp_path_factory.mktemp("cm") / "registry")
    reg.promote(reg.register(moderation_tiny).name)
    return reg


@pytest.fixture(scope="module")
def url(registry, serve_port):
    from ray import serve

    from cases.content_moderation.serve import build_app

    serve.run(build_app(registry.root, num_cpus=0), name="moderation", route_prefix="/cm")
    return f"http://127.0.0.1:{serve_port}/cm"


def _png_b64(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_good_post_ad_and_hash_match(url):
    r = requests.post(f"{url}/moderate", json={"text": "have a lovely day"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] in ("allow", "review", "remove") and body["reason"]
    assert set(body["scores"]) >= {"offensive", "hate", "spam", "scam"}
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    ad = {"text": "summer sale on running shoes", "kind": "ad", "image_b64": _png_b64(img)}
    r = requests.post(f"{url}/moderate", json=ad, timeout=60)
    assert r.status_code == 200, r.text
    assert {"image", "ad_fused"} <= set(r.json()["scores"])
    known = _SCAM[0].format(amount="500 dollars", url="http://bit.ly/x").upper()
    r = requests.post(f"{url}/moderate", json={"text": known}, timeout=60)
    assert r.json()["action"] == "remove" and r.json()["reason"].startswith("hash match")
    assert r.json()["priority"] is None  # removed: no reviewer slot, no queue priority


def test_review_answers_the_queue_priority_at_the_requests_reach(url):
    from cases.content_moderation.data import severity

    text = "click here to win"  # sent to review by the tiny model
    r = requests.post(f"{url}/moderate", json={"text": text, "reach": 2500}, timeout=60)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["action"] == "review" and a["reach"] == 2500.0
    policy, scores = a["priority_policy"], a["scores"]
    assert scores[policy] >= a["thresholds"][policy]["review"]
    assert a["severity"] == severity(policy)
    assert a["priority"] == pytest.approx(severity(policy) * 2500 * scores[policy], abs=1e-3)
    b = requests.post(f"{url}/moderate", json={"text": text}, timeout=60).json()
    assert b["reach"] == 100.0 and b["priority"] == pytest.approx(a["priority"] / 25, abs=1e-3)


def test_status_shows_the_monitor_after_requests(url):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"post number {i}: see you at the game tonight" for i in range(60)]
    texts += [f"you are a worthless idiot number {i}" for i in range(60)]

    def post(t):
        return requests.post(f"{url}/moderate", json={"text": t}, timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, texts)) == {200}
    mon = requests.get(f"{url}/status", timeout=30).json()["monitor"]
    assert mon["enabled"] and mon["observed"] >= 100 and mon["ready"]
    assert set(mon["features"]) == {"n_chars", "n_words", "non_ascii", "upper", "has_image"}
    assert mon["scores"]["reference_std"] > 0 and "decision_rate" in mon


def test_observation_follows_the_scores(registry):
    pred = ModerationPredictor.load(registry.resolve("champion"))
    reqs = [{"text": "have a lovely day"}, {"text": "YOU IDIOT ÄÖ", "image_b64": "x"}]
    feats, scores = pred.observation(reqs)
    assert feats["n_words"] == [4.0, 3.0] and feats["has_image"] == [0.0, 1.0]
    assert feats["upper"][1] == 1.0 and feats["non_ascii"][1] == pytest.approx(2 / 12)
    answers = pred.moderate_batch([{"text": r["text"], "kind": "post"} for r in reqs])
    assert pred.observation(reqs, answers)[1] == pytest.approx(scores, abs=1e-3)
    removed = [a["action"] == "remove" and a["reason"].startswith("model") for a in answers]
    assert [s >= 1.0 for s in scores] == removed  # the margin is the auto-removal decision


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},  # empty
        {"text": "   "},  # blank
        {"text": "x" * 6000},  # oversized
        {"text": 5},  # wrong type
        {"text": ["a"]},
        {"text": "hi\x00\x01"},  # binary characters
        {"text": "hi", "kind": "video"},  # unknown kind
        {"text": "hi", "image_b64": 12},  # wrong type
        {"text": "hi", "colour": "red"},  # unknown field
        {"text": "hi", "image_b64": "A" * 800_000},  # huge base64
        {"text": "hi", "reach": 0},  # reach: a positive finite number of views, up to 1e12
        {"text": "hi", "reach": -5},
        {"text": "hi", "reach": 1e13},
        {"text": "hi", "reach": "100"},
        {"text": "hi", "reach": True},
        {"text": "hi", "reach": None},
        {},  # missing text
    ],
)
def test_bad_fields_get_422(url, body):
    r = requests.post(f"{url}/moderate", json=body, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]
    if "reach" in body:  # the message names the field
        assert "reach" in r.json()["error"]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_reach_gets_422(url, raw):
    body = b'{"text": "hi", "reach": ' + raw.encode() + b"}"
    r = requests.post(f"{url}/moderate", data=body, timeout=60,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422, r.text
    assert "reach" in r.json()["error"]


def _bomb_b64() -> str:
    buf = io.BytesIO()
    Image.new("1", (3000, 3000)).save(buf, format="PNG")  # 9 MP declared, a few KB on the wire
    return base64.b64encode(buf.getvalue()).decode()


def _truncated_b64() -> str:
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    raw = base64.b64decode(_png_b64(img))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


@pytest.mark.parametrize(
    "image_b64, words",
    [
        ("!!!not base64!!!", "base64"),
        (base64.b64encode(b"hello, this is not an image").decode(), "image"),
        (_truncated_b64(), ""),
        (_bomb_b64(), "pixels"),
    ],
)
def test_bad_images_get_400(url, image_b64, words):
    r = requests.post(f"{url}/moderate", json={"text": "hi", "image_b64": image_b64}, timeout=60)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def test_not_json_and_too_large(url):
    r = requests.post(f"{url}/moderate", data=b"\xff\xfe\x00binary", timeout=60,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]
    r = requests.post(f"{url}/moderate", data=b"{" + b" " * (2 << 20) + b"}", timeout=60,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413


def test_corrupt_champion_refused_old_one_serves(url, registry):
    before = requests.get(f"{url}/version", timeout=30).json()
    assert before["artifact_sha256"]
    v1 = registry.resolve("champion")
    v2 = registry.register(v1)
    registry.promote(v2.name)
    spec = json.loads((v2 / "predictor.json").read_text())
    spec["thresholds"] = {}  # tampered after registration: the sha256 no longer matches
    (v2 / "predictor.json").write_text(json.dumps(spec))
    r = requests.post(f"{url}/reload", timeout=60)
    assert r.status_code == 409 and r.json()["error"]
    assert requests.get(f"{url}/version", timeout=30).json()["serving"] == before["serving"]
    r = requests.post(f"{url}/moderate", json={"text": "still serving?"}, timeout=60)
    assert r.status_code == 200
    with pytest.raises(Exception, match="sha256|changed|MANIFEST|mismatch"):
        ModerationPredictor.load(v2)
