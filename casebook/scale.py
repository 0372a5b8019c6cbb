"""Scale-out of the video case on a Ray cluster: the two-tower trained data-parallel with Ray
Train, and the item tower's ONNX export run over the interaction log with Ray Data.

    casebook bench scale                 # built-in data (fast preset), a 2-node loopback cluster
    casebook bench scale --quick         # tiny preset, one epoch (a minute or two: Ray start-up)
    RAY_ADDRESS=head:6379 casebook bench scale     # the same on a real cluster

Training. `two_tower_loop` is `TwoTowerRetriever.fit` (cases/video_recommendation/train.py)
written for Ray Train: the same pairs, model, loss, optimizer, seed and epoch order, with each
global batch of `tower_batch` pairs split across the workers (rank r takes every world-th pair)
and the gradients averaged by DDP (gloo). So the global batch, the step count and the learning
rate are the single-process ones; what changes is that each worker's in-batch softmax sees its
own tower_batch / workers pairs as negatives. One worker reproduces the single-process run
(same batches, same init). Rank 0 saves the weights (safetensors) as a Ray Train checkpoint each
epoch; the driver loads the last one and scores validation NDCG@10 exactly as `train_retrievers`
picks models.

Batch inference. The item tower (id + topic embeddings -> MLP) is exported to ONNX and run on
every row of the interaction log: Ray Data blocks of `batch` rows -> the data gate
(`shared.gate.check_batch` with the case's interaction schema; a refused block is dropped) ->
an actor pool of onnxruntime sessions -> item vectors. The plain loop does the same blocks, gate
and session in one process; both are timed in the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def two_tower_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop (see the module doc). config: H, P, log_q, topics (+1 map), n_items,
    n_topics, dim, lr, batch, epochs, seed."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint
    from safetensors.torch import save_file
    from torch import nn

    from cases.video_recommendation.model import VideoRecTwoTower

    torch.set_num_threads(1)  # one core per worker; the machine's cores are the workers
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node = ray.get_runtime_context().get_node_id()
    torch.manual_seed(config["seed"])
    rng = np.random.default_rng(config["seed"])
    model = VideoRecTwoTower(config["n_items"], config["n_topics"], config["dim"])

    class TowerLoss(nn.Module):  # DDP syncs gradients of what runs through forward()
        def __init__(self, tower: VideoRecTwoTower):
            super().__init__()
            self.tower = tower

        def forward(self, h, p, t, q):
            return self.tower.loss(h, p, t, q)

    wrapped = ray.train.torch.prepare_model(TowerLoss(model))
    H, P = torch.from_numpy(config["H"]), torch.from_numpy(config["P"])
    log_q, topics = torch.from_numpy(config["log_q"]), torch.from_numpy(config["topics"])
    opt = torch.optim.Adam(wrapped.parameters(), lr=config["lr"])
    B = config["batch"]
    nodes = [node]
    if world > 1:
        nodes = [None] * world
        dist.all_gather_object(nodes, node)
    for epoch in range(config["epochs"]):
        model.train()
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(len(P)))  # the same order on every rank
        total, n = 0.0, 0
        for b in range(0, len(P), B):
            idx = perm[b : b + B]
            if len(idx) < world:  # every rank must take the same steps
                break
            mine = idx[rank::world]
            p = P[mine]
            loss = wrapped(H[mine], p, topics[p], log_q[p])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        metrics = {
            "epoch": epoch + 1,
            "loss": total / max(n, 1),  # rank 0's shard
            "epoch_s": time.perf_counter() - t0,
            "steps": n,
            "nodes": sorted(set(nodes)),
            "workers_per_node": {x: nodes.count(x) for x in set(nodes)},
        }
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                save_file(model.state_dict(), os.path.join(d, "two_tower.safetensors"))
                ckpt = Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=ckpt)


def load_tower(checkpoint_dir: Path, n_items: int, n_topics: int, dim: int) -> Any:
    """The two-tower from a checkpoint folder (safetensors: no pickle)."""
    from safetensors.torch import load_file

    from cases.video_recommendation.model import VideoRecTwoTower

    model = VideoRecTwoTower(n_items, n_topics, dim)
    model.load_state_dict(load_file(str(Path(checkpoint_dir) / "two_tower.safetensors")))
    return model.eval()


def val_gains(retriever: Any, split: Any) -> np.ndarray:
    """Per-user validation NDCG@10 (one held-out item: 1/log2(pos + 2) if in the top 10)."""
    from cases.video_recommendation.train import rank_users
    from shared.ranking import ndcg_at_k

    users = split.val_users
    rel = [[t] for t in split.val_item[users]]
    return ndcg_at_k(rank_users(retriever, split, users, "val", 10), rel, 10, reduce="none")


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple:
    """95% bootstrap interval of mean(b - a) over the same users."""
    d = np.asarray(b, float) - np.asarray(a, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


class ItemTowerOnnx:
    """A Ray Data actor: item vectors of each row's item from the item tower's ONNX export."""

    def __init__(self, path: str, topics: np.ndarray):
        import ray

        from shared.onnx_utils import make_session

        self.session = make_session(path, threads=1)
        self.topics = topics  # (I + 1,) topic index +1 per item index +1
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        items = batch["item"].astype(np.int64) + 1
        vec = embed(self.session, items, self.topics)  # (B, D)
        return {"item": batch["item"], "vector": vec, "node": np.full(len(items), self.node)}


def embed(session: Any, items: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """items (B,) +1 indices -> (B, D) unit vectors through the ONNX item tower."""
    return session.run(None, {"item": items, "topic": topics[items]})[0]


def export_item_tower(model: Any, topics: np.ndarray, path: Path) -> tuple[Path, float]:
    """The item tower alone to ONNX (dynamic batch), with its parity against torch."""
    import torch
    from torch import nn

    from shared.onnx_utils import check_parity, export_onnx

    class ItemTower(nn.Module):
        def __init__(self, tower):
            super().__init__()
            self.tower = tower

        def forward(self, item, topic):
            return self.tower.item_vectors(item, topic)  # (B, D)

    tower = ItemTower(model).eval()
    items = torch.arange(1, min(65, len(topics)))
    ex = (items, torch.from_numpy(topics)[items])
    axes = {"item": {0: "batch"}, "topic": {0: "batch"}, "vector": {0: "batch"}}
    path = export_onnx(tower, ex, path, ["item", "topic"], ["vector"], dynamic_axes=axes)
    return path, check_parity(tower, path, ex, atol=1e-4)


def log_blocks(
    data: Any, batch: int, bad_blocks: int = 1, seed: int = 0, min_rows: int = 0
) -> list[dict]:
    """The interaction log in time order as blocks of `batch` rows (the gate's batches), with
    `bad_blocks` of them replaced by a bot flood (one item replayed on every row), which the
    gate must refuse; the blocks are replayed until there are `min_rows` rows (a bigger day
    of log than the built-in data holds)."""
    inter = data.interactions
    order = np.argsort(inter["timestamp"], kind="stable")
    cols = {c: np.asarray(inter[c])[order] for c in ("user", "item", "timestamp", "weight")}
    n = len(order) // batch * batch  # whole blocks only: the gate's volume check is per block
    blocks = [{c: v[s : s + batch] for c, v in cols.items()} for s in range(0, n, batch)]
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(blocks), min(bad_blocks, len(blocks)), replace=False):
        blocks[i] = {**blocks[i], "item": np.full(batch, blocks[i]["item"][0])}
    repeat = max(1, -(-min_rows // max(1, len(blocks) * batch)))
    return blocks * repeat


def plain_loop(blocks: list[dict], gate, path: Path, topics: np.ndarray) -> dict[str, Any]:
    """The same gate and ONNX session over the same blocks, in this process, one at a time."""
    from shared.onnx_utils import make_session

    t0 = time.perf_counter()
    session = make_session(path, threads=1)
    rows_out, vecs = 0, []
    for b in blocks:
        kept = gate(b)
        if len(kept["item"]):
            vecs.append(embed(session, kept["item"].astype(np.int64) + 1, topics))
            rows_out += len(kept["item"])
    wall = time.perf_counter() - t0
    rows_in = sum(len(b["item"]) for b in blocks)
    return {"rows_in": rows_in, "rows_out": rows_out, "wall_s": wall, "vectors": vecs}


def run_scale(
    preset: str = "fast",
    seed: int = 0,
    workers: tuple[int, ...] = (1, 2),
    nodes: int = 2,
    cpus_per_node: int = 2,
    epochs: int | None = None,
    batch: int = 2048,
    concurrency: int = 2,
    min_rows: int = 0,
    spread_batches: bool = False,
    scratch: Path | None = None,
    address: str | None = None,
    log=print,
) -> tuple[list[dict], dict[str, Any]]:
    """Single-process vs Ray Train two-tower, then plain loop vs Ray Data inference.

    Returns (rows, summary) for `shared.bench.write_results`. Ray runs on `ray_cluster(nodes)`
    (127.0.0.1) or on the cluster at `address` / RAY_ADDRESS; everything started is stopped.
    """
    import torch

    from cases.video_recommendation.config import get_config
    from cases.video_recommendation.data import (
        interaction_schema,
        interaction_thresholds,
        make_builtin,
    )
    from cases.video_recommendation.train import TwoTowerRetriever, make_split, tower_pairs
    from shared.distributed import (
        gate_step,
        gated_batch_inference,
        ray_cluster,
        train_data_parallel,
    )
    from shared.gate import build_reference
    from shared.lifecycle import torch_threads

    cfg = get_config(preset, **({} if epochs is None else {"tower_epochs": epochs}))
    scratch = Path(scratch or tempfile.mkdtemp(prefix="casebook-scale-"))
    data = make_builtin(cfg, seed)
    split = make_split(data, seed)
    n_topics = int(data.item_topic.max()) + 1 if data.item_topic.size else 0
    rows: list[dict] = []

    # 1. The case's own single-process training: the reference metric and time.
    with torch_threads(1):
        t0 = time.perf_counter()
        ref = TwoTowerRetriever(cfg, data.item_topic, seed).fit(split)
        single_s = time.perf_counter() - t0
        ref_gain = val_gains(ref, split)
    log(f"scale: single process {single_s:.1f} s, val NDCG@10 {np.nanmean(ref_gain):.4f}")
    rows.append(
        {
            "part": "train",
            "how": "single process (TwoTowerRetriever.fit)",
            "workers": 1,
            "nodes": 1,
            "wall_s": single_s,
            "val_ndcg10": float(np.nanmean(ref_gain)),
        }
    )

    H, P = tower_pairs(split.seqs_train, cfg.seq_len)
    counts = np.bincount(P - 1, minlength=split.n_items) + 1.0
    log_q = np.log(np.r_[1.0, counts] / counts.sum()).astype(np.float32)
    topics = (np.r_[-1, data.item_topic] + 1).astype(np.int64)
    config = {
        "H": H, "P": P, "log_q": log_q, "topics": topics, "n_items": split.n_items,
        "n_topics": n_topics, "dim": cfg.embed_dim, "lr": cfg.lr, "batch": cfg.tower_batch,
        "epochs": cfg.tower_epochs, "seed": seed,
    }  # fmt: skip
    summary: dict[str, Any] = {"preset": preset, "pairs": len(P), "epochs": cfg.tower_epochs}
    with ray_cluster(nodes=nodes, cpus_per_node=cpus_per_node, address=address) as cluster:
        summary["cluster_nodes"] = len(cluster.nodes)
        summary["cluster"] = "local loopback" if cluster.started else cluster.address
        last = None
        for w in workers:
            run = train_data_parallel(two_tower_loop, config, w, scratch / "train", f"tt{w}")
            tower = load_tower(run.checkpoint_dir, split.n_items, n_topics, cfg.embed_dim)
            r = TwoTowerRetriever(cfg, data.item_topic, seed)
            r.model = tower
            with torch_threads(1), torch.no_grad():
                r.cache_items()  # the item vectors the retriever scores against
                gain = val_gains(r, split)
            lo, hi = paired_ci(ref_gain, gain, seed=seed)
            m = run.metrics
            log(
                f"scale: Ray Train {w} worker(s) on {len(m['nodes'])} node(s): fit {run.wall_s:.1f}"
                f" s, val NDCG@10 {np.nanmean(gain):.4f} (diff 95% CI [{lo:+.4f}, {hi:+.4f}])"
            )
            rows.append(
                {
                    "part": "train",
                    "how": "Ray Train TorchTrainer (gloo, DDP)",
                    "workers": w,
                    "nodes": len(m["nodes"]),
                    "wall_s": run.wall_s,
                    "last_epoch_s": m["epoch_s"],
                    "val_ndcg10": float(np.nanmean(gain)),
                    "diff_ci95": [round(lo, 4), round(hi, 4)],
                    "checkpoint": str(run.checkpoint_dir),
                }
            )
            last = tower

        # 2. Batch inference: the item tower over the interaction log, gated.
        onnx_path, parity = export_item_tower(last, topics, scratch / "item_tower.onnx")
        blocks = log_blocks(data, batch, bad_blocks=1, seed=seed, min_rows=min_rows)
        schema = interaction_schema(data.weight_is_count)
        sample = np.random.default_rng(seed).choice(len(data.interactions["user"]), batch, False)
        reference = build_reference({c: v[sample] for c, v in data.interactions.items()}, schema)
        gate = gate_step(schema, reference, interaction_thresholds())
        plain = plain_loop(blocks, gate, onnx_path, topics)
        dist = gated_batch_inference(
            blocks, gate, ItemTowerOnnx, {"path": str(onnx_path), "topics": topics},
            batch_size=batch, concurrency=concurrency,
            cpus_per_actor=max(0.5, cpus_per_node - 0.5),
            tasks_per_actor=1 if spread_batches else None,
        )  # fmt: skip
        same = plain["rows_out"] == dist.rows_out
        for how, rin, rout, wall, n in (
            ("plain loop (1 process)", plain["rows_in"], plain["rows_out"], plain["wall_s"], 1),
            (f"Ray Data map_batches ({concurrency} actors)", dist.rows_in, dist.rows_out,
             dist.wall_s, len(dist.nodes)),
        ):  # fmt: skip
            rows.append(
                {
                    "part": "batch_inference",
                    "how": how,
                    "workers": 1 if n == 1 and "plain" in how else concurrency,
                    "nodes": n,
                    "wall_s": wall,
                    "rows_in": rin,
                    "rows_refused": rin - rout,
                    "rows_per_s": rin / wall if wall > 0 else float("nan"),
                }
            )
        if cluster.started:
            # Every socket the cluster's processes listen on (they descend from this one).
            from shared.serving import listening_sockets, process_tree

            socks = listening_sockets(process_tree(os.getpid()))
            summary["listening_sockets"] = len(socks)
            summary["listening_not_loopback"] = sorted(
                f"{x.name}:{x.host}:{x.port}" for x in socks if not x.loopback
            )
        log(
            f"scale: batch inference {plain['rows_in']} rows: plain {plain['wall_s']:.2f} s, "
            f"Ray Data {dist.wall_s:.2f} s on {len(dist.nodes)} node(s); refused "
            f"{plain['rows_in'] - plain['rows_out']} / {dist.rows_in - dist.rows_out} rows"
        )
    summary.update(
        {
            "onnx_parity_max_abs": parity,
            "same_rows_refused": same,
            "batch_rows": batch,
            "single_process_s": single_s,
        }
    )
    return rows, summary
