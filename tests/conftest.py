"""Fixtures shared by the test modules.

Ray takes 15-20 s to start on two cores, so the whole session shares one Ray instance and one
Serve HTTP proxy on 127.0.0.1; each module that serves gets `serve_port` and its applications are
deleted when the module ends.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _ray_serve_session():
    from shared.serving import free_port, serve_runtime_env

    runtime_env = serve_runtime_env()  # as served: no usage stats (no network), fast path
    import ray
    from ray import serve

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


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
