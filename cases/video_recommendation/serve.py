"""Ray Serve: the funnel as three deployments behind one HTTP ingress.

    Recommender (ingress, re-ranking)  --handle-->  Retriever (faiss)  --handle-->  Ranker (ONNX)

    POST /recommend {"user_id": 12, "history": [3, 17]?, "k": 10, "blocked": [5]?}
    -> {"items": [{"item": 431, "score": 2.1, "source": "sasrec"}, ...], "cold_start": false,
        "fallback": false, "model_version": "v0001"}

An unknown user without a history gets the cold-start list (trending and fresh videos); bad input
gets a 4xx with a one-line error; if the Ranker fails, the ingress serves the retrieval order
(`"fallback": true`) and logs the failure. Every deployment loads the registry's champion (or
`previous` if the champion is refused).
"""

# No `from __future__ import annotations` here: FastAPI must see the request model as a class
# (Ray Serve pickles the ingress class by value, so string annotations would not resolve).
import logging
from pathlib import Path

from pydantic import BaseModel, Field

from shared.serving import ReloadableModel, make_app

from .predictor import VideoRecPredictor

logger = logging.getLogger("casebook")
MAX_HISTORY = 1000  # watch-history items per request


class VideoRecRequest(BaseModel):
    user_id: int | str | None = Field(default=None, description="known user id, or None")
    history: list[int] | None = Field(default=None, max_length=MAX_HISTORY)
    k: int = Field(default=10, ge=1, le=100)
    blocked: list[int] = Field(default_factory=list, max_length=MAX_HISTORY)


def build_app(registry_root: str, fail_ranker: bool = False, num_cpus: float = 0.0):
    """The application: ingress + retrieval + ranking deployments, each loading the champion.

    `fail_ranker` injects a ranker fault (for the fallback test); `num_cpus` per replica (0 lets
    tests run on a small Ray instance).
    """
    from ray import serve

    app = make_app("video-recommendation")
    opts = {"num_cpus": num_cpus}

    @serve.deployment(ray_actor_options=opts, max_ongoing_requests=32)
    class VideoRecRetriever:
        def __init__(self, root: str):
            self.model = ReloadableModel(root, VideoRecPredictor.load)

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
        async def __call__(self, hists: list[list[int]]) -> list:
            return self.model.get().retrieve(hists)

    @serve.deployment(ray_actor_options=opts, max_ongoing_requests=32)
    class VideoRecRankerDeployment:
        def __init__(self, root: str, fail: bool):
            self.model = ReloadableModel(
                root, lambda p: VideoRecPredictor.load(p, fail_ranker=fail)
            )

        def __call__(self, hist: list[int], cand) -> list:
            return self.model.get().rank([hist], [cand])[0]

    @serve.deployment(ray_actor_options=opts, max_ongoing_requests=64)
    @serve.ingress(app)
    class VideoRecRecommender:
        def __init__(self, root: str, retriever, ranker):
            self.model = ReloadableModel(root, VideoRecPredictor.load)
            self.retriever, self.ranker = retriever, ranker
            self.failures = 0

        @app.post("/recommend")
        async def recommend(self, req: VideoRecRequest) -> dict:
            p = self.model.get()
            hists, cold = p.prepare([req.user_id], [req.history])  # CasebookError -> 400
            cand = await self.retriever.remote(hists[0])
            try:
                scores = [await self.ranker.remote(hists[0], cand)]
                fallback = False
            except Exception as e:  # noqa: BLE001 - any ranker failure degrades, never 500s
                self.failures += 1
                logger.warning(
                    "ranker failed (%d so far), serving fallback: %s",
                    self.failures,
                    str(e).splitlines()[0] if str(e) else type(e).__name__,
                )
                scores, fallback = None, True
            return p.finish(hists, cold, [cand], scores, fallback, req.k, [req.blocked])[0]

        @app.get("/status")
        def status(self) -> dict:
            return {**self.model.status(), "ranker_failures": self.failures}

    root = str(Path(registry_root))
    return VideoRecRecommender.bind(
        root, VideoRecRetriever.bind(root), VideoRecRankerDeployment.bind(root, fail_ranker)
    )
