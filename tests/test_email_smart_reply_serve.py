"""The served smart-reply app: good requests answer, every bad input gets a 4xx, a corrupt
champion is refused on reload while the last good model keeps serving."""

import json
import shutil

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def registry(tmp_path_factory, smart_reply_tiny):
    from shared.artifacts import Registry

    root = tmp_path_factory.mktemp("esr")
    reg = Registry(root / "registry")
    version = reg.register(smart_reply_tiny[0]).name
    reg.promote(version)
    return reg


@pytest.fixture(scope="module")
def url(registry, serve_port):
    from ray import serve

    from cases.email_smart_reply.serve import build_app

    serve.run(build_app(str(registry.root), num_cpus=0), name="esr", route_prefix="/esr")
    return f"http://127.0.0.1:{serve_port}/esr"


def test_suggest_and_compose_good_requests(url):
    r = requests.post(
        f"{url}/suggest", json={"message": "Can we meet tomorrow at 3pm?", "k": 3}, timeout=60
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"suggestions", "triggered", "trigger_score", "version"}
    assert len(body["suggestions"]) <= 3
    if body["triggered"]:
        assert body["suggestions"] and all(isinstance(s["text"], str) for s in body["suggestions"])
        texts = [s["text"] for s in body["suggestions"]]
        assert len(set(texts)) == len(texts)
    else:
        assert body["suggestions"] == []
    r = requests.post(
        f"{url}/suggest",
        json={"message": "Sure, 3pm works.", "context": ["Can we meet tomorrow?"]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    r = requests.post(
        f"{url}/compose", json={"message": "Thanks for the slides!", "prefix": "you"}, timeout=60
    )
    assert r.status_code == 200 and isinstance(r.json()["completion"], str)


@pytest.mark.parametrize(
    "route, body, status",
    [
        ("suggest", {"message": ""}, 422),  # empty
        ("suggest", {"message": "   "}, 422),  # blank
        ("suggest", {"message": 42}, 422),  # wrong type
        ("suggest", {"message": "hi", "k": "3"}, 422),
        ("suggest", {"message": "hi", "k": 0}, 422),  # k out of range
        ("suggest", {"message": "hi", "k": 50}, 422),
        ("suggest", {"message": "x" * 6000}, 422),  # oversized
        ("suggest", {"message": "hi\x00\x01\x02"}, 422),  # binary characters
        ("suggest", {"message": "hi", "colour": "red"}, 422),  # unknown field
        ("suggest", {}, 422),
        ("suggest", {"message": "hi", "context": "not a list"}, 422),
        ("suggest", {"message": "hi", "context": [1, 2]}, 422),
        ("suggest", {"message": "hi", "context": ["z" * 6000]}, 422),
        ("suggest", {"message": "hi", "context": ["ok"] * 11}, 422),
        ("suggest", {"message": "hi", "context": ["bad\x00"]}, 422),
        ("suggest", [], 422),
        ("compose", {"message": "hi", "prefix": 5}, 422),
        ("compose", {"message": "", "prefix": "a"}, 422),
        ("compose", {"message": "hi", "prefix": "y" * 600}, 422),
    ],
)
def test_bad_input_gets_4xx(url, route, body, status):
    r = requests.post(f"{url}/{route}", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_non_json_and_binary_bodies_get_400(url):
    for data in (b"\x89PNG\r\n\x1a\n\x00\x00", b"{not json"):
        r = requests.post(
            f"{url}/suggest", data=data, timeout=30, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, r.text


def test_corrupt_champion_refused_last_good_keeps_serving(url, registry):
    good = registry.resolve("champion")
    bad = registry.versions_dir / "v9999"
    shutil.copytree(good, bad)
    w = bad / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    (registry.root / "aliases.json").write_text(
        json.dumps({"champion": "v9999", "previous": good.name})
    )
    r = requests.post(f"{url}/reload", timeout=60)
    assert r.status_code == 409 and "sha256" in r.json()["error"]
    r = requests.post(f"{url}/suggest", json={"message": "Thanks so much!"}, timeout=60)
    assert r.status_code == 200 and r.json()["version"] == good.name
    assert np.isfinite(r.json()["trigger_score"])


def test_status_shows_the_golden_check_and_the_monitor(url):
    from shared.monitor import MonitorThresholds

    st = requests.get(f"{url}/status", timeout=30).json()
    assert st["golden"].startswith("golden set:") and "reproduced" in st["golden"]
    assert st["monitor"]["enabled"] is True
    msgs = ["Can we meet tomorrow at 3pm?", "Thanks so much for the report!", "Is it on?"]
    n = MonitorThresholds().min_count + MonitorThresholds().check_every
    for i in range(n):
        r = requests.post(f"{url}/suggest", json={"message": msgs[i % 3]}, timeout=60)
        assert r.status_code == 200
    mon = requests.get(f"{url}/status", timeout=30).json()["monitor"]
    assert mon["observed"] >= n and mon["ready"] is True
    assert set(mon["features"]) == {
        "message_chars",
        "message_words",
        "non_ascii_share",
        "known_word_share",
        "top_score",
    }
    assert 0.0 <= mon["decision_rate"] <= 1.0
    # three messages repeated are not the validation traffic: the length features moved
    assert "drift" in mon["alarms"]
