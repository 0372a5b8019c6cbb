"""Ray Train and Ray Data glue: a loopback cluster of several nodes, data-parallel training
with `TorchTrainer`, and gated batch inference with `map_batches`.

    with ray_cluster(nodes=2, cpus_per_node=2) as cluster:     # two raylets on 127.0.0.1
        result = train_data_parallel(loop, {"lr": 1e-3}, num_workers=2, storage=tmp, name="tt")
        out = gated_batch_inference(blocks, gate, Scorer, {"path": onnx}, concurrency=2)

`ray_cluster` starts a head and `nodes - 1` worker nodes with `ray.cluster_utils.Cluster`, every
process on 127.0.0.1 (the node address; `shared.serving.start_local_ray` explains why the
address alone is not enough), no dashboard and no usage statistics (no network at run time).
With `address=` (or RAY_ADDRESS in the environment) it joins that cluster instead and starts
nothing: the same commands then run on a real cluster. Whatever it started, it stops, through
`Cluster.shutdown` (which stops each node's processes by the ids it recorded).

Ray is imported inside the functions: importing this module needs neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.serving import loopback_node


@dataclass
class RayCluster:
    """What `ray_cluster` started or joined."""

    address: str  # the GCS address ("127.0.0.1:port" for a local one)
    nodes: list[str] = field(default_factory=list)  # alive node ids when it came up
    started: bool = True  # False when it joined an existing cluster (RAY_ADDRESS)
    cluster: Any = None  # the ray.cluster_utils.Cluster, when started here


@contextlib.contextmanager
def _no_address_file() -> Iterator[None]:
    """`Cluster` writes its address to /tmp/ray/ray_current_cluster, where any later
    `ray.init()` on the machine would find it and join this cluster instead of starting its own
    (another user's tests, a `casebook serve`), and deletes that file on shutdown, whoever wrote
    it. Neither happens in this block."""
    from ray import cluster_utils

    utils = cluster_utils.ray._private.utils
    common = cluster_utils.ray._common.utils
    saved = utils.write_ray_address, common.reset_ray_address
    utils.write_ray_address = lambda *a, **k: None
    common.reset_ray_address = lambda *a, **k: None
    try:
        yield
    finally:
        utils.write_ray_address, common.reset_ray_address = saved


def alive_nodes() -> list[str]:
    """Ids of the alive nodes of the connected Ray cluster."""
    import ray

    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


@contextlib.contextmanager
def ray_cluster(
    nodes: int = 2,
    cpus_per_node: int = 2,
    object_store_mb: int = 256,
    address: str | None = None,
    timeout_s: float = 60.0,
) -> Iterator[RayCluster]:
    """A Ray cluster for the block: `nodes` local nodes on 127.0.0.1, or the one at `address`.

    Args:
        nodes: nodes to start (head included); each is its own raylet and object store.
        cpus_per_node: CPUs each node offers to Ray (placement only; it does not pin cores).
        object_store_mb: object store size per node.
        address: join this cluster ("host:port", "auto"); default the RAY_ADDRESS variable.
            Nothing is started then, and only the driver's connection is closed at the end.
        timeout_s: how long to wait for the nodes to register.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
        try:
            yield RayCluster(address=address, nodes=alive_nodes(), started=False)
        finally:
            ray.shutdown()
        return
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = {
        "num_cpus": cpus_per_node,
        "node_ip_address": "127.0.0.1",
        "object_store_memory": object_store_mb << 20,
    }
    cluster = None
    try:
        with loopback_node(), _no_address_file():
            try:
                cluster = Cluster(
                    initialize_head=True,
                    connect=False,
                    head_node_args={**args, "include_dashboard": False},
                )
                for _ in range(nodes - 1):
                    cluster.add_node(**args)
            except Exception as e:  # Ray waits 30 s (fixed) for a node to register
                from shared.errors import CasebookError, first_line

                raise CasebookError(
                    f"a local Ray node did not start ({first_line(e)}); on an overloaded "
                    "machine, try again when it is quieter"
                ) from None
            cluster.wait_for_nodes(timeout=timeout_s)
            ray.init(address=cluster.address, log_to_driver=False)
        yield RayCluster(address=cluster.address, nodes=alive_nodes(), cluster=cluster)
    finally:
        ray.shutdown()
        if cluster is not None:
            with _no_address_file():
                cluster.shutdown()


# ----------------------------------------------------------------------------- Ray Train


@dataclass
class TrainRun:
    """One `train_data_parallel` run: the last reported metrics, the checkpoint, the time."""

    metrics: dict[str, Any]
    checkpoint_dir: Path | None  # a local folder holding the last checkpoint's files
    wall_s: float  # trainer.fit() from call to return: start-up, training, checkpointing
    num_workers: int


def train_data_parallel(
    loop: Callable[[dict], None],
    config: dict[str, Any],
    num_workers: int,
    storage: str | Path,
    name: str,
    spread: bool = True,
    cpus_per_worker: float = 1.0,
) -> TrainRun:
    """Run `loop(config)` on `num_workers` CPU workers with Ray Train's `TorchTrainer` (gloo).

    The loop reports with `ray.train.report(metrics, checkpoint=...)`; Ray Train persists the
    checkpoints under `storage/name` (a shared file system or bucket on a real cluster).
    `spread=True` places the workers on different nodes where it can (placement "SPREAD").
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=False,
            resources_per_worker={"CPU": cpus_per_worker},
            placement_strategy="SPREAD" if spread else "PACK",
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    ckpt = Path(result.checkpoint.path) if result.checkpoint is not None else None
    return TrainRun(dict(result.metrics or {}), ckpt, wall, num_workers)


# ----------------------------------------------------------------------------- Ray Data


def gate_step(schema: Any, reference: Any, thresholds: Any = None) -> Callable[[dict], dict]:
    """A `map_batches` function: the batch if `shared.gate.check_batch` passes it, else an
    empty batch with the same columns (the refused rows never reach the model). The result adds
    no column; count refusals by comparing rows in and out."""

    def step(batch: dict) -> dict:
        from shared.gate import check_batch

        if check_batch(batch, schema, reference, thresholds).passed:
            return batch
        return {k: v[:0] for k, v in batch.items()}

    return step


@dataclass
class BatchInferenceRun:
    """Rows in and out of a gated `map_batches` pipeline, and its wall-clock."""

    rows_in: int
    rows_out: int
    wall_s: float
    nodes: list[str]  # the nodes that ran the model step
    outputs: dict[str, Any]  # the collected output columns

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.wall_s if self.wall_s > 0 else float("nan")


def gated_batch_inference(
    blocks: list[dict],
    gate: Callable[[dict], dict],
    model_cls: type,
    model_kwargs: dict[str, Any],
    batch_size: int,
    concurrency: int = 2,
    cpus_per_actor: float = 1.0,
    gate_cpus: float = 0.5,
    tasks_per_actor: int | None = None,
) -> BatchInferenceRun:
    """Ray Data: blocks -> `gate` (a task per batch) -> `model_cls` (an actor pool) -> rows.

    `blocks` are dicts of equal-length numpy columns, one Ray Data block each (so a batch of
    `batch_size` rows is one block when the blocks have that size, and the gate sees the same
    batches as a plain loop over the blocks). `concurrency` actors of `cpus_per_actor` CPUs
    each: a node's CPUs less `gate_cpus` per actor puts one actor on each node and leaves room
    for the gate's tasks (`gate_cpus` each; without room they would wait for ever).
    `tasks_per_actor=1` hands each batch to an idle actor, so even a small dataset reaches
    every node (Ray Data's default queues a few batches per actor, and a small dataset may then
    all go to the first one); it costs throughput: 234 s instead of 43 s for the 405K rows of
    `casebook bench scale`, measured on a busy 2-core machine.
    `model_cls(**model_kwargs)` is built once per actor and called on each batch; its output
    must carry a "node" column (the id of the node that ran it) besides its own columns.
    Timed from building the dataset to the last row collected.
    """
    import pandas as pd
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Start the whole actor pool before the first batch: otherwise the first actor up may take
    # every batch of a small dataset while the others are still starting.
    ctx.wait_for_min_actors_s = 300
    t0 = time.perf_counter()
    ds = ray.data.from_pandas([pd.DataFrame(b) for b in blocks])
    ds = ds.map_batches(gate, batch_size=batch_size, batch_format="numpy", num_cpus=gate_cpus)
    ds = ds.map_batches(
        model_cls,
        fn_constructor_kwargs=model_kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=concurrency, max_tasks_in_flight_per_actor=tasks_per_actor
        ),
        num_cpus=cpus_per_actor,
    )
    cols: dict[str, list] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            cols.setdefault(k, []).append(v)
    wall = time.perf_counter() - t0
    import numpy as np

    out = {k: np.concatenate(v) for k, v in cols.items()}
    nodes = sorted({str(x) for x in out.get("node", ())})
    n_out = len(next(iter(out.values()))) if out else 0
    return BatchInferenceRun(
        sum(len(next(iter(b.values()))) for b in blocks), n_out, wall, nodes, out
    )
