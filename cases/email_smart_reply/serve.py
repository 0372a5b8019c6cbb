"""Ray Serve app: `POST /suggest` (three replies, or none) and `POST /compose` (next words).

    curl -s 127.0.0.1:8000/suggest -H 'content-type: application/json' \
         -d '{"message": "Can we meet tomorrow at 3pm?", "k": 3}'
    -> {"suggestions": [{"text": "Sounds good, see you then.", "score": 0.62}, ...],
        "triggered": true, "trigger_score": 0.91, "version": "v0001"}
    curl -s 127.0.0.1:8000/compose -H 'content-type: application/json' \
         -d '{"message": "Can we meet tomorrow at 3pm?", "prefix": "sounds go"}'
    -> {"completion": "od", "version": "v0001"}

One replica holds the ONNX message tower, the faiss index of the response set and the compose
model; `/suggest` requests are batched with `@serve.batch` (one ONNX call per batch). The
registry's champion is loaded with sha256 verification; `/reload` refuses a corrupt champion and
keeps serving the last good one. Bad input (empty, oversized, wrong types, k out of range,
binary) gets a 4xx with a one-line message.
"""

# No `from __future__ import annotations`: Ray pickles the deployment class by value, and FastAPI
# must see the real request types on the handlers.
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from .predictor import SmartReplyPredictor

MAX_MESSAGE_CHARS = 5000  # an email body longer than this is pasted text; the tower reads 64 pieces
MAX_PREFIX_CHARS = 500
MAX_K = 5


def _printable(v: str, name: str) -> str:
    if any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\ufffd" for ch in v):
        raise ValueError(f"{name} contains control or binary characters")
    return v


class SuggestRequest(BaseModel):
    """An incoming email (its cleaned body) and how many suggestions to return."""

    model_config = ConfigDict(extra="forbid")

    message: StrictStr = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    k: StrictInt = Field(default=3, ge=1, le=MAX_K)

    @field_validator("message")
    @classmethod
    def _check(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message is empty")
        return _printable(v, "message")


class ComposeRequest(BaseModel):
    """The incoming email and what the user has typed of the reply so far."""

    model_config = ConfigDict(extra="forbid")

    message: StrictStr = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    prefix: StrictStr = Field(default="", max_length=MAX_PREFIX_CHARS)

    @field_validator("message", "prefix")
    @classmethod
    def _check(cls, v: str, info: Any) -> str:
        if info.field_name == "message" and not v.strip():
            raise ValueError("message is empty")
        return _printable(v, info.field_name)


def build_app(artifact: str | Path, num_cpus: float = 1.0, max_batch_size: int = 16) -> Any:
    """A bound Ray Serve application around SmartReplyPredictor (artifact folder or registry)."""
    from fastapi.responses import JSONResponse
    from ray import serve

    from shared.serving import ReloadableModel, make_app

    app = make_app("email-smart-reply")

    @serve.deployment(
        # max_ongoing_requests >= max_batch_size, or batches are silently capped at 5.
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options={"num_cpus": num_cpus},
    )
    @serve.ingress(app)
    class SmartReplyServer:
        def __init__(self, root: str):
            self.model = ReloadableModel(root, SmartReplyPredictor.load)

        @app.post("/suggest")
        async def suggest(self, req: SuggestRequest) -> dict:
            out = await self.batched(req.model_dump())
            return {**out, "version": self.model.version}

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.002)
        async def batched(self, reqs: list[dict]) -> list[dict]:
            return self.model.get().suggest_batch(reqs)

        @app.post("/compose")
        def compose(self, req: ComposeRequest) -> dict:
            out = self.model.get().compose_batch([req.model_dump()])[0]
            return {**out, "version": self.model.version}

        @app.get("/version")
        def version(self) -> dict:
            return self.model.status()

        @app.get("/status")
        def status(self) -> dict:
            return self.model.status()

        @app.post("/reload")
        def reload(self) -> JSONResponse:
            status = self.model.reload()
            return JSONResponse(status, status_code=200 if status["ok"] else 409)

    return SmartReplyServer.bind(str(artifact))
