"""The drill's fast parts: the fuzz generator and hostile cases against a small FastAPI app of our
own (plain uvicorn, no Ray), the bad-batch drill, and the command's wiring. The full drill of a
real case (Ray Serve, a trained artifact) is the slow test at the end."""

import contextlib
import json
import threading
import time

import pytest
import requests
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from casebook import drill
from shared.serving import free_port, make_app


class EchoRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "hello", "k": 2}]}
    )

    text: StrictStr = Field(min_length=1, max_length=50)
    k: int = Field(default=3, ge=1, le=10)
    ids: list[int] = Field(default_factory=list, max_length=5)


class LooseRequest(BaseModel):
    ids: list[int] = Field(default_factory=list)


def _app():
    app = make_app("drill-toy")

    @app.post("/echo")
    def echo(req: EchoRequest) -> dict:
        return {"text": req.text[: req.k], "n": len(req.ids)}

    @app.post("/buggy")
    def buggy(req: LooseRequest) -> dict:
        import numpy as np

        return {"sum": int(np.asarray(req.ids, dtype=np.int64).sum())}  # overflows on 2**64

    return app


@pytest.fixture(scope="module")
def toy_url():
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_routes_schema_and_good_request_from_openapi(toy_url):
    openapi = requests.get(f"{toy_url}/openapi.json", timeout=10).json()
    routes = drill.post_routes(openapi)
    assert set(routes) == {"/echo", "/buggy"}
    assert routes["/echo"]["required"] == ["text"]
    good, where = drill.good_request("toy", "/echo", routes["/echo"])
    assert good == {"text": "hello", "k": 2} and where == "openapi examples"
    assert drill.good_request("toy", "/buggy", routes["/buggy"]) == (None, "none")
    # Every case's request model carries the example the drill starts from.
    from cases.content_moderation.serve import ModerateRequest
    from cases.email_smart_reply.serve import ComposeRequest, SuggestRequest
    from cases.mobile_keyboard.serve import SuggestRequest as KeyRequest
    from cases.video_recommendation.serve import VideoRecRequest

    for model in (ModerateRequest, ComposeRequest, SuggestRequest, KeyRequest, VideoRecRequest):
        good, where = drill.good_request("case", "/route", model.model_json_schema())
        assert where == "openapi examples"
        assert model.model_validate(good)  # the example is itself a valid request


def test_fuzz_bodies_are_many_varied_and_deterministic():
    schema = EchoRequest.model_json_schema()
    good = {"text": "hello", "k": 2}
    bodies = drill.fuzz_bodies(schema, good, 200)
    assert len(bodies) == 200
    assert len({b for _, b in bodies}) > 150  # varied
    kinds = {label.split(" ", 1)[-1] for label, _ in bodies}
    assert {"replaced", "dropped", "extra field"} <= kinds | {"extra field"}
    assert drill.fuzz_bodies_uncached(schema, good, 30) == drill.fuzz_bodies_uncached(
        schema, good, 30
    )
    labels = [label for label, _, _ in drill.hostile_cases(schema, good)]
    for want in ("empty body", "not JSON", "1e400 in text", "2**64 in text", "NaN in text"):
        assert want in labels
    assert "k over maximum" in labels and "ids over maxItems" in labels
    big = [b for label, b, _ in drill.hostile_cases(schema, good) if label == "10 MB body"][0]
    assert len(big) > drill.BIG_BODY


def test_bad_input_drill_passes_a_sound_route_and_catches_a_500(toy_url):
    schema = EchoRequest.model_json_schema()
    good = {"text": "hello", "k": 2}
    ok = drill.drill_bad_input(toy_url, {"/echo": (schema, good)}, 200)
    assert ok.passed, ok.details["failures"][:3]
    assert sum(ok.details["per_route"]["/echo"].values()) >= 200
    # A route that overflows on a huge integer: the drill names the request that got a 500.
    loose = LooseRequest.model_json_schema()
    bad = drill.drill_bad_input(toy_url, {"/buggy": (loose, {"ids": [1, 2]})}, 50)
    assert not bad.passed
    fives = [f for f in bad.details["failures"] if f["status"] == 500]
    assert fives and "ids" in json.dumps(fives[0])


@contextlib.contextmanager
def _no_hypothesis(monkeypatch):
    """As after a plain `pip install -e .`: hypothesis (the dev extra) cannot be imported. A
    block, not the whole test: hypothesis's own pytest plugin imports it around each test."""
    import sys

    with monkeypatch.context() as m:
        for name in [k for k in sys.modules if k == "hypothesis" or k.startswith("hypothesis.")]:
            m.delitem(sys.modules, name)
        m.setitem(sys.modules, "hypothesis", None)  # `import hypothesis` -> ImportError
        yield


def test_bad_input_drill_runs_without_hypothesis_and_says_so(toy_url, monkeypatch):
    schema = EchoRequest.model_json_schema()
    good = {"text": "hello", "k": 2}
    loose = LooseRequest.model_json_schema()
    with _no_hypothesis(monkeypatch):
        with pytest.raises(ImportError):
            import hypothesis  # noqa: F401
        assert drill.fuzz_source() == "built-in"
        bodies = drill.fuzz_bodies(schema, good, 200)
        assert len(drill.fuzz_bodies(schema, good, 10)) == 10
        r = drill.drill_bad_input(toy_url, {"/echo": (schema, good)}, 200)
        # Still catches a route that answers 500.
        buggy = drill.drill_bad_input(toy_url, {"/buggy": (loose, {"ids": [1, 2]})}, 50)
    assert bodies == drill.builtin_fuzz_bodies(schema, good)  # the fixed set, deterministic
    assert 30 <= len(bodies) < 200 and len({b for _, b in bodies}) == len(bodies)
    labels = {label for label, _ in bodies}
    assert {"text replaced", "k dropped", "ids replaced", "extra field", "any JSON body"} <= labels
    assert r.passed, r.details["failures"][:3]
    assert r.details["generated_by"] == "built-in"
    assert "not hypothesis (not installed" in r.figure and "pip install" in r.figure
    n_hostile = len(drill.hostile_cases(schema, good))
    assert sum(r.details["per_route"]["/echo"].values()) == n_hostile + len(bodies)
    assert not buggy.passed


def test_bad_input_figure_unchanged_with_hypothesis(toy_url):
    pytest.importorskip("hypothesis")
    schema = EchoRequest.model_json_schema()
    r = drill.drill_bad_input(toy_url, {"/echo": (schema, {"text": "hello", "k": 2})}, 20)
    assert r.details["generated_by"] == "hypothesis" and "built-in" not in r.figure


def test_bad_batch_drill_refuses_each_corruption_for_its_reason(tmp_path):
    r = drill.drill_bad_batch(tmp_path)
    assert r.passed, r.figure
    assert "duplicate_rate" in r.details["duplicated"]["checks"]
    assert "top_value_share" in r.details["bot-flooded"]["checks"]
    assert "target_js" in r.details["label-flipped"]["checks"]
    assert "dtype" in r.details["schema-drifted"]["checks"]
    assert not r.details["fresh (control)"]["refused"]
    assert len(list((tmp_path / "quarantine").glob("*.npz"))) == 4


def test_drill_command_is_wired():
    from casebook.cli import build_parser

    args = build_parser().parse_args(["drill", "mobile-keyboard", "--quick", "--only", "sockets"])
    assert args.command == "drill" and args.case == "mobile-keyboard" and args.quick


def test_unknown_drill_is_a_one_line_error(tmp_path, capsys):
    from casebook.cli import main

    assert main(["drill", "mobile-keyboard", "--only", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown drill" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.serve
def test_full_drill_of_the_keyboard(tmp_path):
    """Every drill against the keyboard's live app, trained fresh at its tiny preset."""
    metrics, results = drill.drill_case(
        "mobile-keyboard", preset="tiny", out=tmp_path / "drill", load_seconds=5.0
    )
    doc = json.loads(metrics.read_text())
    assert set(doc["drills"]) == set(drill.DRILLS)
    failed = [r.line() for r in results if not r.passed]
    assert not failed, failed
