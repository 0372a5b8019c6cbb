"""The served keyboard app: the served numbers are the predictor's, bad input gets a clear
4xx, and the standard routes tell the truth (/version names the artifact, /reload fails loudly)."""

import pytest
import requests

from cases.mobile_keyboard.predictor import KeyboardPredictor
from shared.artifacts import Registry

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def registry(tmp_path_factory, keyboard_trigram):
    """A registry whose champion is a trained trigram (conftest.keyboard_trigram)."""
    root = tmp_path_factory.mktemp("mk")
    art = keyboard_trigram[0]
    reg = Registry(root / "registry")
    reg.promote(reg.register(art).name)
    return reg


@pytest.fixture(scope="module")
def url(registry, serve_port):
    # The session's Ray + Serve (tests/conftest.py); the app is deleted after this module.
    from ray import serve

    from cases.mobile_keyboard.serve import build_app

    serve.run(build_app(registry.root, num_cpus=0), name="keyboard", route_prefix="/keyboard")
    return f"http://127.0.0.1:{serve_port}/keyboard"


def test_served_numbers_are_the_predictors(url, registry):
    local = KeyboardPredictor.load(registry.resolve("champion"), with_spell=False)
    for context, prefix in (("see you at the", "st"), ("do you want to", ""), ("", "gr")):
        body = {"context": context, "prefix": prefix}
        r = requests.post(f"{url}/suggest", json=body, timeout=30)
        assert r.status_code == 200, r.text
        got, expect = r.json(), local.suggest(context, prefix)
        assert got["next_words"] == expect["next_words"] and len(got["next_words"]) == 3
        assert got["completions"] == expect["completions"]
        assert all(w.startswith(prefix) for w in got["completions"])
    # The trained trigram learned the grammar: "do you want to" is followed by a verb it saw.
    assert local.suggest("do you")["next_words"][0] == "want"


def test_standard_routes(url, registry):
    v = requests.get(f"{url}/version", timeout=30).json()
    assert v["serving"] == "v0001" and len(v["artifact_sha256"]) == 64
    assert requests.get(f"{url}/status", timeout=30).json()["shipped"] == "kn_full"
    assert requests.get(f"{url}/health", timeout=30).status_code == 200
    # A corrupt new champion: /reload answers 409 and the old model keeps serving.
    new = registry.register(registry.resolve("champion")).name
    registry.promote(new)
    (registry.resolve("champion") / "vocab.json").write_text('["tampered"]')
    r = requests.post(f"{url}/reload", timeout=60)
    assert r.status_code == 409 and r.json()["error"]
    assert requests.get(f"{url}/version", timeout=30).json()["serving"] == "v0001"
    r = requests.post(f"{url}/suggest", json={"context": "do you"}, timeout=30)
    assert r.status_code == 200 and r.json()["next_words"][0] == "want"


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


def test_load_payloads_are_the_golden_keystrokes_from_an_artifact_or_a_registry(
    registry, keyboard_trigram, tmp_path
):
    from cases.mobile_keyboard.serve import SuggestRequest, load_payloads
    from shared.artifacts import save_artifact
    from shared.errors import CasebookError
    from shared.golden import read_golden

    golden = read_golden(keyboard_trigram[0])["requests"]
    from_registry = load_payloads(registry.root, n=50, seed=1)
    assert len(from_registry) == 50 and all(r in golden for r in from_registry)
    assert from_registry == load_payloads(keyboard_trigram[0], n=50, seed=1)  # the champion
    assert from_registry != load_payloads(registry.root, n=50, seed=2)  # shuffled by the seed
    for body in from_registry:
        SuggestRequest.model_validate(body)  # each a valid request, not a 4xx
    bare = save_artifact(tmp_path / "bare", {}, {"shipped": "kn_full"}, {}, "test", {})
    with pytest.raises(CasebookError, match="no golden requests"):
        load_payloads(bare)  # an artifact from before the golden set
