"""Fixtures shared by the test modules.

Ray takes 15-20 s to start on two cores, so the whole session shares one Ray instance and one
Serve HTTP proxy on 127.0.0.1; each module that serves gets `serve_port` and its applications are
deleted when the module ends.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _ray_serve_session():
    from shared.serving import start_local_ray, stop_local_ray

    # As served (no usage stats: no network; Serve's fast path), on 2 CPUs like CI.
    local = start_local_ray("127.0.0.1", num_cpus=2)
    yield local.port
    stop_local_ray(local)


@pytest.fixture(scope="module")
def serve_port(request, _ray_serve_session):
    """The port of the session's Serve proxy on 127.0.0.1; apps are removed after the module."""
    import ray
    from ray import serve

    # Deployments defined inside a test module must travel by value: workers cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(request.module)
    yield _ray_serve_session
    for name in list(serve.status().applications):
        serve.delete(name)


@pytest.fixture(scope="session")
def smart_reply_tiny(tmp_path_factory):
    """A smart-reply artifact from the training path on a small built-in sample (seconds), with
    the models that made it: (artifact path, models). Read-only: tests copy it to change it."""
    from cases.email_smart_reply import train as T
    from cases.email_smart_reply.config import get_config
    from cases.email_smart_reply.data import builtin_threads, split_by_thread

    folder = tmp_path_factory.mktemp("esr")
    cfg = get_config(
        "tiny",
        n_threads=250,
        scratch_time_cap_s=3.0,
        compose_time_cap_s=2.0,
        seq2seq_time_cap_s=1.0,
        k_anon=2,
        n_clusters=8,
    )
    d = builtin_threads(cfg.n_threads, seed=0)
    tr, va, _ = split_by_thread(d, cfg, 0)
    train_d, val_d = d.subset(tr), d.subset(va)
    train_d.no_reply = list(d.no_reply)
    models = T.train(cfg, train_d, val_d, seed=0, log=lambda *a: None)
    fp32, _ = T.export_towers(models, cfg, folder / "onnx")
    art = T.save(models, cfg, folder / "artifact", fp32, "test", {}, {})
    return T.finish_monitoring(art, val_d, models.trigger.threshold, seed=0), models


@pytest.fixture(scope="session")
def keyboard_trigram(tmp_path_factory):
    """A keyboard artifact whose shipped model is a trained trigram (the model ships when it
    wins), with its golden set and monitor reference: (artifact path, corpus). No error model:
    a replica then skips the 82K-word spelling dictionary (seconds); corrections are covered by
    the predictor tests. Read-only: tests copy it to change it."""
    from cases.mobile_keyboard.baseline import KeyboardKneserNey
    from cases.mobile_keyboard.data import builtin_corpus
    from cases.mobile_keyboard.model import KeyboardVocab
    from cases.mobile_keyboard.predictor import TRIGRAM
    from cases.mobile_keyboard.train import finish_keyboard_artifact
    from shared.artifacts import save_artifact

    corpus = builtin_corpus(1500, seed=2)
    vocab = KeyboardVocab.build(corpus.train, 400)
    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    cfg = {"embed_dim": 8, "hidden_dim": 16, "num_layers": 1, "shipped": "kn_full"}
    files = {"vocab.json": vocab.to_json().encode(), TRIGRAM: kn.full_.to_bytes()}
    root = tmp_path_factory.mktemp("mk")
    art = save_artifact(root / "artifact", {}, cfg, {}, "test", files)
    return finish_keyboard_artifact(art, corpus.val, seed=0), corpus
