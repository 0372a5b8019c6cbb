"""The predictor: loads a verified artifact and moderates batches of posts and ads.

    pred = ModerationPredictor.load("runs/content-moderation/registry/versions/v0001")
    pred.score_texts(["you are an idiot"])          # (1, P) calibrated P(violates policy)
    pred.moderate_batch([{"text": "...", "kind": "post", "image": None, "reach": 100.0}])
    -> [{"action": "remove"|"review"|"allow", "reason": "...", "scores": {policy: p},
         "thresholds": {policy: {"review": t, "remove": t}}, "kind": "post", "reach": 100.0,
         "priority": 186.0, "severity": 2.0, "priority_policy": "offensive"}]

Order of decisions for one item: (1) known-bad matching (normalized-text hash, perceptual image
hash) -> remove, reason "hash match"; (2) the text policies (TF-IDF + LR and/or the MiniLM encoder
in ONNX Runtime, calibrated, blended); (3) the image policy (a small CNN in ONNX Runtime) and, for
ads, the late fusion of text and image scores; (4) per-policy thresholds from validation:
remove at >= the remove threshold, review at >= the review threshold, else allow; (5) for an
item sent to review, its review-queue priority: severity x reach x P(violate) of the policy with
the largest severity x P among those that reached their review threshold (`review.queue_priority`;
severities from `data.severity`, reach from the request, default `review.DEFAULT_REACH` = 100
views). `priority`, `severity` and `priority_policy` are null for items not sent to review.

`score_texts` is the one scoring function: the offline evaluation of the shipped model calls it
on the saved artifact, and the server calls it per batch. No training imports, no tqdm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from shared.artifacts import load_artifact, sanity_check
from shared.errors import ArtifactError

from .data import severity
from .model import ModerationTfidf, apply_platt, load_tokenizer, onnx_logits, sigmoid
from .review import DEFAULT_REACH, queue_priority

PROBE_TEXTS = ["have a lovely day everyone", "you are a worthless idiot"]


class ModerationPredictor:
    """Scores and actions for posts and ads from one artifact (see the module doc)."""

    def __init__(self, path: Path, spec: dict, tensors: dict, files: dict[str, bytes]) -> None:
        from shared.onnx_utils import make_session

        self.path = Path(path)
        self.spec = spec
        self.policies: tuple[str, ...] = tuple(spec["policies"])
        self.thresholds: dict[str, dict[str, float]] = spec["thresholds"]
        self.components: dict[str, dict] = spec["components"]
        self.tfidf = None
        self.session = self.tok = None
        if "tfidf" in self.components:
            self.tfidf = ModerationTfidf.from_state(tensors, files["tfidf_vocab.json"])
        if "encoder" in self.components:
            self.session = make_session(self.path / spec["encoder_file"], threads=1)
            self.tok = load_tokenizer(files["tokenizer.json"], spec["max_len"])
        self.image_session = None
        if spec.get("image_file"):
            self.image_session = make_session(self.path / spec["image_file"], threads=1)
        self.bank = None
        if "hashbank.npz" in files:
            self.bank = _load_bank(files["hashbank.npz"], spec.get("hash_radius"))
        self.fusion = spec.get("fusion")  # {"coef": [...], "intercept": b, "threshold": {...}}

    @classmethod
    def load(cls, path: str | Path) -> ModerationPredictor:
        """Verify the artifact's sha256 manifest, load it, and check it scores sanely."""
        art = load_artifact(path)
        if "predictor.json" not in art.files:
            raise ArtifactError(f"artifact {path} has no predictor.json (not a moderation model)")
        try:
            spec = json.loads(art.files["predictor.json"])
        except ValueError:
            raise ArtifactError(f"artifact {path}: predictor.json is not JSON") from None
        pred = cls(Path(path), spec, art.tensors, art.files)
        sanity_check(pred.score_texts(PROBE_TEXTS))
        return pred

    # ------------------------------------------------------------------------- scoring

    def component_probs(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Calibrated (N, P) probabilities of each component."""
        out = {}
        for name, comp in self.components.items():
            if name == "tfidf":
                z = self.tfidf.logits(texts)
            else:
                z = onnx_logits(self.session, self.tok, texts)
            out[name] = apply_platt(z, np.asarray(comp["platt"], np.float32))
        return out

    def score_texts(self, texts: list[str]) -> np.ndarray:
        """(N, P) P(violates) per text policy: the weighted blend of calibrated components."""
        if not texts:
            return np.zeros((0, len(self.policies)), np.float32)
        probs = self.component_probs(texts)
        blended = sum(self.components[k]["weight"] * probs[k] for k in probs)
        return np.asarray(blended, np.float32)

    def score_images(self, images: list[np.ndarray]) -> np.ndarray:
        """(N,) P(image violates) from the CNN in ONNX Runtime; images uint8 (H, W, 3)."""
        from .images import score_images

        if self.image_session is None or not images:
            return np.zeros(len(images), np.float32)
        return score_images(self.image_session, images)

    def fuse_ads(self, text_scores: np.ndarray, image_scores: np.ndarray) -> np.ndarray:
        """Late fusion for ads: logistic regression on [text policy scores, image score]."""
        if self.fusion is None:
            return np.maximum(text_scores.max(1), image_scores)
        x = np.concatenate([text_scores, image_scores[:, None]], axis=1)  # (N, P + 1)
        return sigmoid(x @ np.asarray(self.fusion["coef"]) + self.fusion["intercept"])

    # ------------------------------------------------------------------------- actions

    def _action(self, scores: dict[str, float], thresholds: dict[str, dict]) -> tuple[str, str]:
        removes = [
            (s / thresholds[p]["remove"], p)
            for p, s in scores.items()
            if p in thresholds and s >= thresholds[p]["remove"]
        ]
        if removes:
            p = max(removes)[1]
            t = thresholds[p]["remove"]
            return "remove", f"model: {p} score {scores[p]:.3f} >= remove threshold {t:.3f}"
        reviews = [
            (s, p) for p, s in scores.items() if p in thresholds and s >= thresholds[p]["review"]
        ]
        if reviews:
            p = max(reviews)[1]
            t = thresholds[p]["review"]
            return "review", f"model: {p} score {scores[p]:.3f} >= review threshold {t:.3f}"
        return "allow", "model: every policy score below its review threshold"

    def moderate_batch(self, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide a batch. Each request: {"text": str, "kind": "post"|"ad", "image": uint8
        (H, W, 3) array or None, "reach": expected views if left up (> 0; absent or None:
        DEFAULT_REACH)}. Returns one dict per request, in order (module doc)."""
        texts = [r["text"] for r in reqs]
        text_scores = self.score_texts(texts)  # (N, P)
        with_image = [i for i, r in enumerate(reqs) if r.get("image") is not None]
        img_scores = np.zeros(len(reqs), np.float32)
        if with_image:
            img_scores[with_image] = self.score_images([reqs[i]["image"] for i in with_image])
        thresholds = dict(self.thresholds)
        if self.image_session is not None and "image" in self.spec.get("image_thresholds", {}):
            thresholds["image"] = self.spec["image_thresholds"]["image"]
        out = []
        for i, r in enumerate(reqs):
            scores = {p: round(float(text_scores[i, j]), 4) for j, p in enumerate(self.policies)}
            if i in with_image and self.image_session is not None:
                scores["image"] = round(float(img_scores[i]), 4)
            th = {p: thresholds[p] for p in scores if p in thresholds}
            if r.get("kind") == "ad" and self.fusion is not None:
                img = img_scores[i : i + 1] if i in with_image else np.zeros(1, np.float32)
                scores["ad_fused"] = round(float(self.fuse_ads(text_scores[i : i + 1], img)[0]), 4)
                th["ad_fused"] = self.fusion["thresholds"]
            match = self._hash_match(r)
            if match is not None:
                action, reason = "remove", f"hash match: {match}"
            else:
                action, reason = self._action(scores, th)
            reach = float(DEFAULT_REACH if r.get("reach") is None else r["reach"])
            queue = {"priority": None, "severity": None, "priority_policy": None}
            if action == "review":
                queue = queue_priority(scores, th, {p: severity(p) for p in scores}, reach)
                queue["priority"] = round(queue["priority"], 4)  # as the scores are
            out.append(
                {
                    "action": action,
                    "reason": reason,
                    "scores": scores,
                    # what each score was held against: {policy: {"review": t, "remove": t}}
                    "thresholds": {p: dict(th[p]) for p in scores if p in th},
                    "kind": r.get("kind", "post"),
                    "reach": reach,
                    **queue,
                }
            )
        return out

    # ------------------------------------------------------------------------- monitoring

    def observation(
        self, requests: list[dict[str, Any]], answers: list[dict[str, Any]] | None = None
    ) -> tuple[dict[str, list[float]], list[float]]:
        """What the live monitor watches (shared.monitor), for a batch of `POST /moderate`
        bodies ({"text", "kind", "image_b64"}; the server's decoded {"image": array} too).

        features: per request, the text's length in characters and in words, its share of
            non-ASCII characters, the share of its letters in upper case, and has_image (0/1).
        scores: per request, the auto-removal margin: max over the text policies of
            score / remove threshold (>= 1 means the model removes it; hash matches aside).
            From `answers` when serving already scored the batch, else scored here.
        """
        texts = [str(r.get("text", "")) for r in requests]
        feats: dict[str, list[float]] = {
            "n_chars": [],
            "n_words": [],
            "non_ascii": [],
            "upper": [],
            "has_image": [],
        }
        for r, t in zip(requests, texts, strict=True):
            letters = sum(ch.isalpha() for ch in t)
            feats["n_chars"].append(float(len(t)))
            feats["n_words"].append(float(len(t.split())))
            feats["non_ascii"].append(sum(ord(ch) > 127 for ch in t) / max(len(t), 1))
            feats["upper"].append(sum(ch.isupper() for ch in t) / max(letters, 1))
            has = r.get("image_b64") is not None or r.get("image") is not None
            feats["has_image"].append(float(has))
        if answers is not None:
            s = np.array([[a["scores"][p] for p in self.policies] for a in answers], np.float64)
        else:
            s = self.score_texts(texts).astype(np.float64)  # (N, P)
        remove = np.array([self.thresholds[p]["remove"] for p in self.policies], np.float64)
        margin = (s / np.maximum(remove, 1e-6)).max(axis=1) if len(s) else np.zeros(0)
        return feats, [float(x) for x in margin]

    def _hash_match(self, req: dict) -> str | None:
        if self.bank is None:
            return None
        m = self.bank.match_text(req["text"])
        if m is None and req.get("image") is not None:
            m = self.bank.match_image(req["image"])
        if m is None:
            return None
        return f"known-bad item {getattr(m, 'item_id', m)}"

    def info(self) -> dict[str, Any]:
        return {
            "policies": list(self.policies),
            "components": {k: v["weight"] for k, v in self.components.items()},
            "encoder_file": self.spec.get("encoder_file"),
            "image_model": bool(self.image_session),
            "hash_bank": self.bank is not None,
        }


def _load_bank(data: bytes, radius: int | None):
    """The known-bad hash bank from an .npz of plain arrays (never pickled objects)."""
    import io

    from .hashbank import HashBank

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return HashBank.from_arrays(arrays)
