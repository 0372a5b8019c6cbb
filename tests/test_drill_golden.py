"""The silent-failure and drift drills against a small app of our own (plain uvicorn, one
replica, no Ray): a scorer shipped with a golden set and a monitor reference (shared.golden),
served through ReloadableModel like the cases do. Plus the shifted traffic and the summary."""

import os
import threading
import time

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from toy_scorer import ToyScorer, toy_requests

from casebook import drill
from shared.artifacts import Registry, save_artifact
from shared.golden import finish_artifact
from shared.serving import ReloadableModel, free_port, make_app


def _toy(n, seed):
    return toy_requests(n, seed, caps=0.3)


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "hi"}]})
    text: StrictStr = Field(min_length=1, max_length=400)


def _app(root):
    from fastapi.responses import JSONResponse

    app = make_app("golden-toy")
    holder = ReloadableModel(root, ToyScorer.load, monitor="toy")
    lock = threading.Lock()

    @app.post("/score")
    def score(req: TextRequest) -> dict:
        with lock:
            body = [req.model_dump()]
            _, s = holder.get().observation(body)
            holder.observe(body, None)
        return {"score": s[0]}

    @app.get("/version")
    def version() -> dict:
        return holder.status()

    @app.post("/reload")
    def reload():
        with lock:
            res = holder.reload()
        return JSONResponse(res, status_code=200 if res["ok"] else 409)

    @app.get("/status")
    def status() -> dict:
        return {**holder.status(), "pid": os.getpid(), "monitor": holder.monitor_status()}

    return app


@pytest.fixture()
def served(tmp_path):
    import uvicorn

    art = tmp_path / "art"
    save_artifact(
        art, {"w": torch.tensor([1.5, 3.0, 0.5, -0.2]), "b": torch.tensor([-1.0])}, {}, {}, "f"
    )
    finish_artifact(art, ToyScorer.load, _toy(200, 1), _toy(2000, 2))
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.register(art).name)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(reg.root), host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", reg
    server.should_exit = True
    thread.join(timeout=10)


def test_silent_failure_drill_refuses_then_the_monitor_catches_the_forced_model(served):
    url, reg = served
    r = drill.drill_silent_failure(url, "/score", reg.root, ToyScorer.load, replicas=1)
    assert r.passed, r.figure
    assert r.details["promotion_check"].startswith("golden set: ")
    assert r.details["reload_codes"] and set(r.details["reload_codes"].values()) == {409}
    (alarm,) = r.details["alarms_by_replica"].values()
    assert alarm["after"] <= r.details["alarm_bound"] == 1 * (100 + 50) + drill.ALARM_CHUNK
    # Restored: the champion is the good version again, without the override mark.
    assert reg.aliases()["champion"] == "v0001" and "forced" not in reg.aliases()


def test_drift_drill_names_the_features_that_moved(served):
    url, reg = served
    schema = TextRequest.model_json_schema()
    r = drill.drill_drift(url, "/score", schema, reg.root, replicas=1, per_replica=150)
    assert r.passed, r.figure
    phases = r.details["phases"]
    assert "no drift alarm" in phases["control (golden requests)"]["summary"]
    assert "words" in phases["5x longer texts"]["summary"]
    assert "caps" in phases["another alphabet"]["summary"]


def test_shifted_requests_change_only_the_main_text_within_its_limit():
    reqs = [{"text": "Hello there friend", "k": 3}, {"text": "ok", "k": 1}]
    assert drill.main_text_field(reqs) == "text"
    out = drill.shifted_requests(reqs, "text", max_length=40)
    assert set(out) == {"5x longer texts", "random letters", "another alphabet"}
    assert all(len(r["text"]) <= 40 for r in out["5x longer texts"])
    assert out["5x longer texts"][1]["text"] == "ok ok ok ok ok"
    assert [len(w) for w in out["random letters"][0]["text"].split()] == [5, 5, 6]
    assert out["another alphabet"][1]["text"] == "ок"
    assert all(r["k"] == q["k"] for r, q in zip(out["random letters"], reqs, strict=True))
    assert drill.main_text_field([{"ids": [1]}]) is None


def test_summary_table_has_a_row_per_drill_and_one_per_failed_case():
    rows = {
        "mobile-keyboard": [
            drill.DrillResult("load", True, "32 in flight | p99 9 ms"),
            drill.DrillResult("drift", False, "none"),
        ],
        "video-recommendation": "no loadable model",
    }
    md = drill.summary_markdown(rows, "2026-12-03 14:00 UTC")
    assert "| mobile-keyboard | load | 32 in flight \\| p99 9 ms | yes |" in md
    assert "| mobile-keyboard | drift | none | **no** |" in md
    assert "| video-recommendation | (all) | error: no loadable model | **no** |" in md


def test_drift_drill_takes_a_per_case_hook(served):
    url, reg = served

    def hook(golden):  # e.g. a new cohort: every text in capitals
        return {"shouting cohort": [{"text": r["text"].upper()} for r in golden]}

    schema = TextRequest.model_json_schema()
    r = drill.drill_drift(url, "/score", schema, reg.root, replicas=1, per_replica=150, hook=hook)
    assert r.passed, r.figure
    assert set(r.details["phases"]) == {"control (golden requests)", "shouting cohort"}
    assert "caps" in r.details["phases"]["shouting cohort"]["summary"]
