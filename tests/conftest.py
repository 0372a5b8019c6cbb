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
