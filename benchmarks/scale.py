"""Scale-out on a Ray cluster: Ray Train 1 vs 2 workers, Ray Data vs a plain loop (issue 17).

    casebook bench scale                  # fast preset, 2-node loopback cluster, a few minutes
    casebook bench scale --quick          # tiny preset, 1 epoch, 2 workers only (Ray start-up
                                          # dominates: about a minute on a busy 2-core machine)
    RAY_ADDRESS=HEAD:6379 casebook bench scale --workers 1,2,4   # a real cluster

The video case's two-tower trains single-process (the case's own `fit`, the reference) and then
data-parallel with Ray Train's TorchTrainer on 1 and 2 CPU workers spread over the nodes, with a
checkpoint each epoch through Ray Train; rows give the wall-clock of `trainer.fit()` (start-up
included), the last epoch alone, and the validation NDCG@10 with a paired 95% bootstrap interval
of its difference to the single-process model. Then the item tower, exported to ONNX, embeds
every row of the interaction log (replayed to `--rows`), with the data gate as a step before it:
a plain loop in this process against Ray Data `map_batches` over an actor pool, one run.
The details are in casebook/scale.py; the cluster glue in shared/distributed.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

NAME = "scale"
SUMMARY = "Ray Train two-tower 1 vs 2 workers, Ray Data gated ONNX inference vs a loop (2 nodes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    parser.add_argument(
        "--workers", default=None, help="Ray Train worker counts, e.g. 1,2 (quick: 2)"
    )
    parser.add_argument(
        "--nodes", type=int, default=2, help="local nodes to start (ignored with RAY_ADDRESS)"
    )
    parser.add_argument("--cpus-per-node", type=int, default=2, help="CPUs each local node offers")
    parser.add_argument(
        "--rows", type=int, default=None, help="log rows to embed (default 400K, quick 16K)"
    )


def run(args: argparse.Namespace) -> Path:
    """Run both parts on a cluster; write scale.json and scale.md."""
    from casebook.scale import run_scale
    from shared.bench import machine_fingerprint, write_results
    from shared.lifecycle import run_folder

    quick = bool(getattr(args, "quick", False))
    out = run_folder(f"bench/{NAME}", getattr(args, "out", None))
    workers = getattr(args, "workers", None) or ("2" if quick else "1,2")
    rows_target = getattr(args, "rows", None) or (16_000 if quick else 400_000)
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, summary = run_scale(
        preset="tiny" if quick else "fast",
        seed=int(getattr(args, "seed", 0) or 0),
        workers=tuple(int(w) for w in str(workers).split(",")),
        nodes=int(getattr(args, "nodes", 2) or 2),
        cpus_per_node=int(getattr(args, "cpus_per_node", 2) or 2),
        epochs=1 if quick else None,
        batch=512 if quick else 2048,
        min_rows=rows_target,
        # Quick: one batch in flight per actor, so its few batches reach both nodes; the full
        # run keeps Ray Data's pipelining (shared.distributed.gated_batch_inference).
        spread_batches=quick,
        scratch=out / "scratch",
    )
    summary["total_s"] = time.perf_counter() - t0
    # The machine may be shared: the 1-minute load average at the start and the end.
    summary["load_avg_start"] = load
    summary["load_avg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    columns = [
        "part",
        "how",
        "workers",
        "nodes",
        "wall_s",
        "last_epoch_s",
        "val_ndcg10",
        "diff_ci95",
        "rows_in",
        "rows_refused",
        "rows_per_s",
    ]
    fp = machine_fingerprint(measure=not quick)
    return write_results(out, NAME, rows, summary, columns=columns, fingerprint=fp)
