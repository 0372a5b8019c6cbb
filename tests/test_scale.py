"""Scale-out (issue 17, section 2): the pieces of casebook/scale.py without Ray, then the whole
benchmark on a two-node loopback cluster (`slow`: Ray Train and Ray Data start-up is a minute)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from casebook.scale import (
    embed,
    export_item_tower,
    log_blocks,
    paired_ci,
    plain_loop,
)
from cases.video_recommendation.config import get_config
from cases.video_recommendation.data import (
    interaction_schema,
    interaction_thresholds,
    make_builtin,
)
from cases.video_recommendation.model import VideoRecTwoTower
from cases.video_recommendation.train import tower_pairs
from shared.distributed import gate_step
from shared.gate import build_reference


@pytest.fixture(scope="module")
def data():
    return make_builtin(get_config("tiny"), 0)


def test_tower_pairs_are_history_then_next_watch():
    seqs = [np.array([4, 7, 9]), np.array([2]), np.array([5, 6])]
    H, P = tower_pairs(seqs, L=2)
    # (history -> next) pairs: [4]->7, [4,7]->9, [5]->6; items shifted +1, left-padded.
    assert H.tolist() == [[0, 5], [5, 8], [0, 6]]
    assert P.tolist() == [8, 10, 7]


def test_paired_interval():
    a = np.array([0.0, 1.0, 0.5, 0.0])
    assert paired_ci(a, a) == (0.0, 0.0)
    lo, hi = paired_ci(a, a + 0.1)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def _gate(data, batch):
    schema = interaction_schema(data.weight_is_count)
    n = len(data.interactions["user"])
    sample = np.random.default_rng(0).choice(n, batch, replace=False)
    ref = build_reference({c: v[sample] for c, v in data.interactions.items()}, schema)
    return gate_step(schema, ref, interaction_thresholds())


def test_log_blocks_gate_refuses_the_bot_block(data):
    batch = 256
    blocks = log_blocks(data, batch, bad_blocks=1, seed=0)
    assert blocks and all(len(b["item"]) == batch for b in blocks)
    flooded = [i for i, b in enumerate(blocks) if len(np.unique(b["item"])) == 1]
    assert len(flooded) == 1
    gate = _gate(data, batch)
    kept = [len(gate(b)["item"]) for b in blocks]
    assert kept[flooded[0]] == 0, "the bot flood passed the gate"
    assert sum(k == batch for k in kept) >= len(blocks) - 2  # the clean log passes
    replayed = log_blocks(data, batch, bad_blocks=1, seed=0, min_rows=3 * len(blocks) * batch)
    assert len(replayed) == 3 * len(blocks)


def test_item_tower_onnx_and_plain_loop(data, tmp_path):
    torch.manual_seed(0)
    n_topics = int(data.item_topic.max()) + 1
    model = VideoRecTwoTower(data.n_items, n_topics, 8).eval()
    topics = (np.r_[-1, data.item_topic] + 1).astype(np.int64)
    path, diff = export_item_tower(model, topics, tmp_path / "item.onnx")
    assert diff < 1e-4
    blocks = log_blocks(data, 256, bad_blocks=1, seed=0)[:4]
    out = plain_loop(blocks, _gate(data, 256), path, topics)
    assert out["rows_in"] == 4 * 256 and out["rows_out"] <= out["rows_in"]
    vecs = np.concatenate(out["vectors"])
    assert vecs.shape == (out["rows_out"], 8)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)  # unit vectors
    from shared.onnx_utils import make_session

    items = np.arange(1, 6)
    with torch.no_grad():
        ref = model.item_vectors(torch.from_numpy(items), torch.from_numpy(topics[items]))
    got = embed(make_session(path), items, topics)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)


@pytest.mark.slow
def test_bench_scale_quick_on_two_nodes(tmp_path):
    """Ray Train (2 workers, one per node) and Ray Data on a 2-node loopback cluster."""
    from casebook.cli import load_benchmark

    bench = load_benchmark("scale")
    args = argparse.Namespace(
        quick=True, out=tmp_path, seed=0, workers="2", nodes=2, cpus_per_node=2, rows=None
    )
    path = bench.run(args)
    doc = json.loads(path.read_text())
    assert set(doc) >= {"name", "rows", "summary", "fingerprint"}
    assert doc["summary"]["cluster_nodes"] == 2
    train = [r for r in doc["rows"] if r["part"] == "train"]
    single, (ray_row,) = train[0], train[1:]
    assert ray_row["workers"] == 2 and ray_row["nodes"] == 2, "training did not span both nodes"
    assert 0.0 <= ray_row["val_ndcg10"] <= 1.0 and single["val_ndcg10"] > 0.0
    infer = [r for r in doc["rows"] if r["part"] == "batch_inference"]
    assert len(infer) == 2 and infer[0]["rows_in"] == infer[1]["rows_in"] >= 16_000
    assert infer[1]["nodes"] == 2, "batch inference did not span both nodes"
    # The gate refused the same (bot-flooded) rows in both paths.
    assert infer[0]["rows_refused"] == infer[1]["rows_refused"] > 0
    assert doc["summary"]["same_rows_refused"] is True
    # Nothing the cluster started listens beyond loopback.
    assert doc["summary"]["listening_sockets"] > 0
    assert doc["summary"]["listening_not_loopback"] == []
