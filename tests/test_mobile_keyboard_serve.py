"""The served keyboard app: good input answers, bad input gets a clear 4xx."""

import pytest
import requests

from cases.mobile_keyboard.data import builtin_corpus
from cases.mobile_keyboard.model import KeyboardLSTM, KeyboardVocab
from shared.artifacts import save_artifact

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    corpus = builtin_corpus(300, seed=2)
    vocab = KeyboardVocab.build(corpus.train, 200)
    model = KeyboardLSTM(len(vocab), 8, 16)
    cfg = {"embed_dim": 8, "hidden_dim": 16, "num_layers": 1}
    # No error model: the replica then skips loading the 82K-word spelling dictionary (seconds);
    # corrections are covered by the predictor tests.
    files = {"vocab.json": vocab.to_json().encode()}
    return save_artifact(
        tmp_path_factory.mktemp("mk") / "artifact", model.state_tensors(), cfg, {}, "test", files
    )


@pytest.fixture(scope="module")
def url(artifact, serve_port):
    # The session's Ray + Serve (tests/conftest.py); the app is deleted after this module.
    from ray import serve

    from cases.mobile_keyboard.serve import build_app

    serve.run(build_app(artifact, num_cpus=0), name="keyboard", route_prefix="/keyboard")
    return f"http://127.0.0.1:{serve_port}/keyboard"


def test_suggest_good_input(url):
    r = requests.post(
        f"{url}/suggest", json={"context": "see you at the", "prefix": "st"}, timeout=30
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"completions", "next_words", "corrections"}
    assert all(w.startswith("st") for w in body["completions"])
    r = requests.post(f"{url}/suggest", json={"context": "hi", "user_id": "u_1"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["next_words"]) == 3


@pytest.mark.parametrize(
    "body, status",
    [
        ({"context": "", "prefix": ""}, 422),  # empty
        ({"context": 5, "prefix": "a"}, 422),  # wrong type
        ({"context": "hi", "prefix": ["a"]}, 422),
        ({"context": "x" * 5000}, 422),  # oversized field
        ({"context": "hi\x00\x01"}, 422),  # binary characters
        ({"context": "hi", "colour": "red"}, 422),  # unknown field
        ({"context": "hi", "prefix": "two words"}, 422),
    ],
)
def test_suggest_bad_input(url, body, status):
    r = requests.post(f"{url}/suggest", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_not_json_and_too_large(url):
    r = requests.post(f"{url}/suggest", data=b"\xff\xfe\x00binary", timeout=30,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]
    r = requests.post(f"{url}/suggest", data=b"{" + b" " * (2 << 20) + b"}", timeout=30,
                      headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413
