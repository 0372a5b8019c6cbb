"""Ray Serve app for the keyboard demo: `POST /suggest`, and the standard routes every case has
(`/health`, `/version`, `/reload`, `/status`; shared.serving).

    curl -s 127.0.0.1:8000/suggest -H 'content-type: application/json' \
         -d '{"context": "see you at the", "prefix": "sta"}'
    -> {"completions": [...], "next_words": [...], "corrections": [...], "context_tokens": 4}

On a phone this runs in-process; the server exists for the demo and for load tests. Bad input
(empty, oversized, binary, wrong types, unknown fields) gets a 4xx with a one-line message.
"""

# No `from __future__ import annotations` here: Ray pickles the deployment class by value, and
# FastAPI must see the real SuggestRequest type on the handler, not a string it cannot resolve.
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from .predictor import KeyboardPredictor

LOADER = KeyboardPredictor.load  # what serving loads (the drills' in-process promotion check)
MAX_CONTEXT_CHARS = 2000
MAX_PREFIX_CHARS = 48


def _printable(v: str | None, name: str) -> str | None:
    if v is not None and any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\ufffd" for ch in v):
        raise ValueError(f"{name} contains control or binary characters")
    return v


class SuggestRequest(BaseModel):
    """One keystroke: the text before the current word, and the letters typed of the word."""

    # The example is the good request `casebook drill` and the OpenAPI page start from.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"context": "see you at the", "prefix": "sta"}]},
    )

    context: StrictStr = Field(default="", max_length=MAX_CONTEXT_CHARS)
    prefix: StrictStr = Field(default="", max_length=MAX_PREFIX_CHARS)
    user_id: StrictStr | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")

    @field_validator("context", "prefix")
    @classmethod
    def _no_binary(cls, v: str, info: Any) -> str:
        return _printable(v, info.field_name)

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.context.strip() and not self.prefix.strip():
            raise ValueError("context and prefix are both empty; send at least one of them")
        if self.prefix.strip() and " " in self.prefix.strip():
            raise ValueError("prefix is the current word only; put earlier words in context")
        return self


def build_app(artifact: str | Path, num_cpus: float = 1.0, max_batch_size: int = 16) -> Any:
    """A bound Ray Serve application around KeyboardPredictor (artifact folder or registry)."""
    from ray import serve

    from shared.serving import ReloadableModel, make_app, standard_routes

    app = make_app("mobile-keyboard")

    @serve.deployment(
        # max_ongoing_requests >= max_batch_size, or batches are silently capped at 5.
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options={"num_cpus": num_cpus},
    )
    @serve.ingress(app)
    @standard_routes(app)  # /version (the artifact's hash), /reload (409 when it fails), /status
    class KeyboardServer:
        def __init__(self, root: str):
            # The golden check on every load, the live monitor on /status (shared.golden).
            self.model = ReloadableModel(root, KeyboardPredictor.load, monitor="mobile-keyboard")

        @app.post("/suggest")
        async def suggest(self, req: SuggestRequest) -> dict:
            return await self.batched(req.model_dump())

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.002)
        async def batched(self, reqs: list[dict]) -> list[dict]:
            answers = self.model.get().suggest_batch(reqs)
            self.model.observe(reqs, answers)  # the monitor's window; never raises
            return answers

        def status_info(self) -> dict:
            return {"shipped": self.model.get().config.get("shipped")}

    return KeyboardServer.bind(str(artifact))
