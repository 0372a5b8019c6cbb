"""Feedback loops: train -> deploy -> log -> retrain, greedy vs exploring, on the simulator.

Both arms start from the same logs of the legacy policy (round 0) and the same world. Each round
the arm's model serves `loop_sessions` requests, the outcomes are logged, and the model is
retrained on everything logged so far.
    greedy:  top-K by predicted watch fraction; trained on its own logs as they are.
    explore: (1 - epsilon) of the slots greedy, epsilon of them uniformly random among the rest;
             trained with inverse-propensity weights (clipped at 10) so over-exposed videos do
             not dominate the loss (Chen et al. 2019 use the same correction in REINFORCE).
Tracked per round: true satisfied views per request (the simulator's expectation), catalog
coverage of that round's impressions, and popularity concentration (Gini of impressions per video).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from shared.ranking import gini

from .config import VideoRecConfig
from .data import VideoRecSimulator, gumbel_top_k


class VideoRecLoopMF(torch.nn.Module):
    """Matrix factorisation of watch fraction: logit = <p_u, q_i> + b_i."""

    def __init__(self, n_users: int, n_items: int, dim: int = 16):
        super().__init__()
        self.p = torch.nn.Embedding(n_users, dim)
        self.q = torch.nn.Embedding(n_items, dim)
        self.b = torch.nn.Embedding(n_items, 1)
        for e in (self.p, self.q):
            torch.nn.init.normal_(e.weight, std=0.1)
        torch.nn.init.zeros_(self.b.weight)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.p(u) * self.q(i)).sum(-1) + self.b(i).squeeze(-1)  # (B,)

    @torch.no_grad()
    def all_scores(self, users: np.ndarray) -> np.ndarray:
        u = self.p(torch.from_numpy(users))  # (S, D)
        return (u @ self.q.weight.T + self.b.weight.T).numpy()  # (S, I)


def _fit(model, opt, logs: dict[str, np.ndarray], weighted: bool, rng, epochs: int = 3):
    u = torch.from_numpy(logs["user"])
    i = torch.from_numpy(logs["item"])
    y = torch.from_numpy(logs["watch_frac"])
    w = np.minimum(1.0 / logs["propensity"], 10.0) if weighted else np.ones(len(logs["user"]))
    w = torch.from_numpy((w / w.mean()).astype(np.float32))
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(len(y)))
        for b in range(0, len(y), 4096):
            idx = perm[b : b + 4096]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(u[idx], i[idx]), y[idx], weight=w[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()


def run_feedback_loop(cfg: VideoRecConfig, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Returns {arm: {"satisfied": [...], "coverage": [...], "gini": [...], "watch_min": [...]}}."""
    # A static catalog: every video uploaded before the loop starts, none fresh (no freshness
    # effect), so the rounds differ only by what the policies learn.
    sim = VideoRecSimulator(
        replace(cfg, n_days=1), seed=seed + 100, n_users=cfg.loop_users, n_items=cfg.loop_items
    )
    day = 90.0
    K, I = cfg.slate_size, sim.n_items
    n_explore = max(1, int(round(cfg.loop_epsilon * K)))
    rng0 = np.random.default_rng(seed + 101)
    users0 = rng0.integers(0, sim.n_users, cfg.loop_sessions)
    p0 = sim.logging_probs(users0, day)
    slates0 = gumbel_top_k(np.log(p0 + 1e-30), K, rng0)
    prop0 = np.take_along_axis(p0, slates0, 1) * K  # ~ chance of being in the slate, clipped below
    out0 = sim.sample_outcomes(users0, slates0, day, rng0)
    base_logs = {
        "user": np.repeat(users0, K),
        "item": slates0.reshape(-1),
        "watch_frac": out0["watch_frac"].reshape(-1),
        "propensity": np.clip(prop0.reshape(-1), 1e-3, 1.0).astype(np.float32),
    }
    v0 = sim.expected_value(users0, slates0, day)
    counts0 = np.bincount(slates0.reshape(-1), minlength=I)
    results = {}
    for arm in ("greedy", "explore"):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed + 7)
        model = VideoRecLoopMF(sim.n_users, I)
        opt = torch.optim.Adam(model.parameters(), lr=0.03)
        logs = {k: v.copy() for k, v in base_logs.items()}
        hist = {
            "satisfied": [float(v0["satisfied"].mean())],
            "watch_min": [float(v0["watch_time"].mean() / 60)],
            "coverage": [float((counts0 > 0).mean())],
            "gini": [gini(counts0)],
        }
        _fit(model, opt, logs, arm == "explore", rng, epochs=5)
        for _ in range(cfg.loop_rounds):
            users = rng.integers(0, sim.n_users, cfg.loop_sessions)
            scores = model.all_scores(users)  # (S, I)
            if arm == "greedy":
                slates = np.argsort(-scores, 1)[:, :K]
                prop = np.ones(slates.shape, np.float32)
            else:
                head = np.argsort(-scores, 1)[:, : K - n_explore]
                rest = np.zeros_like(scores)
                np.put_along_axis(rest, head, -np.inf, 1)
                tail = gumbel_top_k(rest, n_explore, rng)  # uniform over what is left
                slates = np.concatenate([head, tail], 1)
                n_left = np.isfinite(rest).sum(1, keepdims=True)
                prop = np.concatenate(
                    [np.ones(head.shape), np.broadcast_to(n_explore / n_left, tail.shape)], 1
                ).astype(np.float32)
            out = sim.sample_outcomes(users, slates, day, rng)
            v = sim.expected_value(users, slates, day)
            counts = np.bincount(slates.reshape(-1), minlength=I)
            hist["satisfied"].append(float(v["satisfied"].mean()))
            hist["watch_min"].append(float(v["watch_time"].mean() / 60))
            hist["coverage"].append(float((counts > 0).mean()))
            hist["gini"].append(gini(counts))
            new = {
                "user": np.repeat(users, K),
                "item": slates.reshape(-1),
                "watch_frac": out["watch_frac"].reshape(-1),
                "propensity": prop.reshape(-1),
            }
            logs = {k: np.concatenate([logs[k], new[k]]) for k in logs}
            _fit(model, opt, logs, arm == "explore", rng, epochs=2)
        results[arm] = hist
    return results


def plot_feedback(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (metric, title) in zip(
        axes,
        [
            ("satisfied", "true satisfied views / request"),
            ("coverage", "catalog coverage"),
            ("gini", "impression Gini (concentration)"),
        ],
        strict=True,
    ):
        for arm, hist in results.items():
            ax.plot(range(len(hist[metric])), hist[metric], marker="o", ms=3, label=arm)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
    axes[0].legend()
    fig.tight_layout()
    return fig
