"""The case's configuration: one typed dataclass and its named presets.

`fast` (the default) keeps `casebook run video-recommendation` near two minutes on 2 cores;
`full` is for real data and the README numbers; `tiny` is for tests (seconds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class VideoRecConfig:
    # --- simulator (built-in data) ---
    n_users: int = 2000  # users on the simulated platform
    n_items: int = 1500  # videos in the catalog
    n_topics: int = 20  # content topics; each video has one
    latent_dim: int = 16  # dimension of the true user/video taste vectors
    n_creators: int = 300  # creators; their popularity follows a power law (Zipf)
    n_days: int = 30  # simulated days of logging
    slate_size: int = 10  # videos shown per home-feed request
    position_decay: float = 0.8  # examination prob at slot k is 1 / (k + 1) ** decay
    logging_temperature: float = (
        1.0  # softmax temperature of the logging policy (higher = more random)
    )
    new_user_fraction: float = 0.15  # users who join in the last 20% of days (cold-start cohort)
    heavy_user_fraction: float = 0.2  # users with about one session a day
    # --- candidate generation ---
    knn_neighbours: int = 100  # item-kNN keeps this many neighbours per item
    ease_lambda: float = 200.0  # L2 strength of EASE (Steck 2019); larger catalogs want larger
    ease_max_items: int = (
        20000  # EASE is O(items^3); above this it uses the most popular items only
    )
    recency_taus: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # candidate decay scales
    # (in watches) of the sequence-aware EASE, picked on validation; 0 = no decay (plain EASE)
    recency_floor: float = 0.02  # weight every old watch keeps (MovieLens-small validation:
    # 0.02 beats 0 at every tau from 1 to 5 watches)
    # --- the served funnel: each lossy knob is chosen on validation (`funnel.choose_funnel`) ---
    i2i_ks: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000, 5000)  # candidate neighbours per
    # video of the served item-item table (the k largest |weights| of each EASE row)
    i2i_budget_mb: float = 128.0  # memory budget of that table (8 bytes per entry): a dense
    # 20K x 20K EASE in float16 is 800 MB; 128 MB holds k <= 800 at 20K videos, 160 at 100K
    i2i_tolerance: float = 0.005  # k is the smallest whose validation NDCG@10 is within this
    # share of the full model's
    i2i_history: int = 2000  # most recent watches the item-item source scores per request
    # (its cost is history x k table entries; MovieLens-small without timestamps, where the
    # kept watches are random ones: validation NDCG@10 of EASE's table 0.147 at 500, full 0.151)
    merge_quotas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)  # share of positions given to the
    # other candidate sources without a ranker (0 = they only fill in below the shipped one)
    rerank_weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)  # MMR diversity weight (1 -
    # mmr_lambda) candidates; 0 = no re-ranking beyond removing watched videos
    embed_dim: int = 64  # two-tower and SASRec embedding width
    tower_epochs: int = 10  # two-tower epochs
    tower_batch: int = 512  # two-tower batch (in-batch + uniform negatives)
    tower_negatives: int = 512  # extra uniformly sampled negatives per batch
    seq_len: int = 50  # SASRec history length (most recent items)
    seq_layers: int = 2  # SASRec self-attention blocks
    seq_heads: int = 2  # attention heads
    seq_dropout: float = 0.2  # dropout in SASRec (small data overfits quickly)
    seq_epochs: int = 15  # SASRec epochs over all training sequences
    seq_batch: int = 128  # sequences per batch
    seq_negatives: int = 512  # sampled-softmax negatives per batch (0 = full softmax)
    lr: float = 1e-3  # Adam learning rate for the retrieval models
    weight_decay: float = 0.0  # Adam weight decay
    retrieval_candidates: int = 200  # candidates handed from retrieval to the ranker
    # --- ranking ---
    rank_epochs: int = 4  # multi-task ranker epochs
    rank_batch: int = 4096
    rank_hidden: int = 64  # width of the shared ranker MLP
    # --- re-ranking ---
    mmr_lambda: float = 0.8  # MMR trade-off of artifacts without a chosen re-rank weight
    max_per_topic: int = 3  # at most this many videos of one topic in a slate
    freshness_boost: float = (
        0.05  # score bonus for a video uploaded today, decaying with a 3-day scale
    )
    # --- evaluation ---
    n_boot: int = 300  # bootstrap resamples for cohort intervals
    ab_users: int = 600  # users in the simulated A/B test
    ope_requests: int = 10000  # logged single-slot requests for off-policy evaluation
    # --- feedback loop ---
    loop_rounds: int = 10  # train -> deploy -> log -> retrain rounds
    loop_users: int = 600
    loop_items: int = 400
    loop_sessions: int = 1000  # sessions logged per round
    loop_epsilon: float = 0.2  # exploration share of the exploring policy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, VideoRecConfig] = {
    "fast": VideoRecConfig(),
    "full": VideoRecConfig(
        n_users=6000,
        n_items=5000,
        n_creators=1000,
        n_days=45,
        tower_epochs=30,
        seq_len=200,
        seq_epochs=200,
        rank_epochs=8,
        n_boot=1000,
        ab_users=3000,
        ope_requests=50000,
        loop_rounds=12,
        loop_users=1500,
        loop_items=1000,
        loop_sessions=4000,
    ),
    "tiny": VideoRecConfig(
        n_users=200,
        n_items=150,
        n_creators=40,
        n_topics=8,
        n_days=10,
        embed_dim=16,
        tower_epochs=2,
        seq_len=20,
        seq_layers=1,
        seq_epochs=2,
        rank_epochs=1,
        rank_hidden=16,
        retrieval_candidates=50,
        n_boot=50,
        ab_users=100,
        ope_requests=2000,
        loop_rounds=2,
        loop_users=100,
        loop_items=80,
        loop_sessions=200,
    ),
    # The serving target's catalog: 100K videos. Everything else is cut so that
    # `casebook run video-recommendation --preset catalog100k --skip-loop` stays a few minutes on
    # 2 cores: a small platform (the simulator's logging policy scores the whole catalog for
    # every user-day), EASE on the 2K most-watched videos (O(items^3)), few epochs, and small
    # A/B and off-policy samples (the off-policy truth holds requests x 100K arrays).
    "catalog100k": VideoRecConfig(
        n_users=1500,
        n_items=100_000,
        n_creators=3000,
        n_days=20,
        ease_max_items=2000,
        tower_epochs=3,
        seq_epochs=3,
        rank_epochs=2,
        n_boot=50,
        ab_users=200,
        ope_requests=200,
    ),
}


def get_config(preset: str = "fast", **overrides: Any) -> VideoRecConfig:
    """The named preset with keyword overrides applied."""
    from shared.errors import CasebookError

    if preset not in PRESETS:
        raise CasebookError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[preset], **overrides)
