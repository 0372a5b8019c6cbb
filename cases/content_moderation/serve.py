"""Ray Serve app for content moderation: `POST /moderate`.

    curl -s 127.0.0.1:8000/moderate -H 'content-type: application/json' \
         -d '{"text": "you are a worthless idiot", "kind": "post", "reach": 2500}'
    -> {"action": "remove"|"review"|"allow", "reason": "...", "scores": {"offensive": 0.97, ...},
        "thresholds": {...}, "kind": "post", "reach": 2500.0,
        "priority": null | severity x reach x P, "severity": null | 2.0,
        "priority_policy": null | "offensive"}

An optional `reach` (expected views if the item stays up; default 100, the median of the
simulated reach) sets the review-queue priority of an item sent to review (predictor.py, review.py
`queue_priority`); it must be a number in (0, 1e12], else 422.

An optional `image_b64` (a base64 JPEG/PNG/GIF/WEBP/BMP) is hash-matched against the known-bad
bank and scored by the image CNN; for `"kind": "ad"` the text and image scores are fused.
Requests are batched with `shared.batching.batch_when_free`: the model runs in a worker thread so
the replica's event loop keeps accepting requests, and they form the next batch when the model
is free. Bad input gets a 4xx with a one-line message: empty, blank or oversized text, control
characters, wrong types, unknown fields, a reach that is not a positive finite number up to
MAX_REACH (422); bad base64, bytes that are not an image, a truncated image, a decompression
bomb (400); a body over 1 MiB (413). Plus the standard /health, /version, /reload and /status.
"""

# No `from __future__ import annotations` here: Ray pickles the deployment class by value, and
# FastAPI must see the real ModerateRequest type on the handler, not a string it cannot resolve.
import base64
import binascii
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictStr, field_validator

from shared.errors import DataError

from .config import REQUEST_LIMITS
from .predictor import ModerationPredictor
from .review import DEFAULT_REACH

# The request limits, from the config (their one definition, with the reasons).
MAX_TEXT_CHARS = REQUEST_LIMITS.max_text_chars
MAX_IMAGE_BYTES = REQUEST_LIMITS.max_image_bytes
MAX_IMAGE_B64_CHARS = (MAX_IMAGE_BYTES * 4) // 3 + 4
MAX_IMAGE_PIXELS = REQUEST_LIMITS.max_image_pixels
# Views: 100 per person on Earth. Above it a priority (severity x reach x P) is no longer a
# count of views, and a reach near float64's limit would make it infinite (not JSON).
MAX_REACH = 1e12


class ModerateRequest(BaseModel):
    """One post or ad: its text (for ads, title and body), an optional image, and its kind."""

    # The example is the good request `casebook drill` and the OpenAPI page start from.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "lovely photos from the weekend trip", "kind": "post"}]
        },
    )

    text: StrictStr = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    image_b64: StrictStr | None = Field(default=None, max_length=MAX_IMAGE_B64_CHARS)
    kind: Literal["post", "ad"] = "post"
    # Strict: true or "100" is a client bug, not a reach of 1 or 100.
    reach: StrictFloat = Field(
        default=DEFAULT_REACH,
        gt=0,
        le=MAX_REACH,
        allow_inf_nan=False,
        description="expected views if the item stays up: the review-queue priority's reach",
    )

    @field_validator("text")
    @classmethod
    def _text_ok(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        if any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\ufffd" for ch in v):
            raise ValueError("text contains control or binary characters")
        return v


def decode_request_image(b64: str | None) -> Any:
    """base64 -> (H, W, 3) uint8, or DataError (a 400) naming what is wrong."""
    if b64 is None:
        return None
    from .images import decode_image

    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("image_b64 is not valid base64") from None
    return decode_image(raw, max_pixels=MAX_IMAGE_PIXELS, max_bytes=MAX_IMAGE_BYTES)


LOADER = ModerationPredictor.load  # the drills' in-process promotion check (shared.golden)
PAGE = Path(__file__).with_name("page") / "index.html"  # GET /: try the API in a browser


def _observe(server: Any, reqs: list[dict], answers: list[dict]) -> None:
    server.model.observe(reqs, answers)  # never raises


def build_app(artifact: str | Path, num_cpus: float = 1.0, max_batch_size: int = 16) -> Any:
    """A bound Ray Serve application around ModerationPredictor (artifact folder or registry)."""
    from ray import serve

    from shared.batching import batch_when_free
    from shared.serving import ReloadableModel, make_app, standard_routes

    app = make_app("content-moderation", page=PAGE)

    @serve.deployment(
        # max_ongoing_requests >= max_batch_size, or batches are silently capped at 5.
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options={"num_cpus": num_cpus},
    )
    @serve.ingress(app)
    @standard_routes(app)
    class ModerationServer:
        def __init__(self, root: str):
            # golden check on every load; the live monitor of what it serves (shared.monitor)
            self.model = ReloadableModel(
                root, ModerationPredictor.load, monitor="content-moderation"
            )

        @app.post("/moderate")
        async def moderate(self, req: ModerateRequest) -> dict:
            import asyncio

            image = None
            if req.image_b64 is not None:
                loop = asyncio.get_running_loop()
                image = await loop.run_in_executor(None, decode_request_image, req.image_b64)
            item = {"text": req.text, "kind": req.kind, "image": image, "reach": req.reach}
            return await self.batched(item)

        # The monitor is fed on the event loop after the answers are out (not thread-safe).
        @batch_when_free(max_batch_size=max_batch_size, after=_observe)
        def batched(self, reqs: list[dict]) -> list[dict]:
            return self.model.get().moderate_batch(reqs)

        def status_info(self) -> dict:
            return self.model.get().info()

    return ModerationServer.bind(str(artifact))
