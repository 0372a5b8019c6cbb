"""The cases' Ray Serve apps for Serve config files and replica counts, without editing the cases.

    casebook serve mobile-keyboard --replicas 2         # 2 replicas of each deployment
    casebook serve mobile-keyboard --config deploy/mobile-keyboard.yaml    # Ray on 127.0.0.1
    serve run deploy/mobile-keyboard.yaml               # Ray's own CLI, the same file
    serve deploy deploy/mobile-keyboard.yaml            # onto a running cluster

Each `deploy/<case>.yaml` names `casebook.serve_apps:build` as its application builder with the
arguments {case, artifact, topology?}; `build` calls the case's own `build_app`
(cases/<pkg>/serve.py; deploy/video-recommendation-stages.yaml passes topology "stages": the
video funnel as three deployments instead of one replica), and the file's `deployments:` list
sets `num_replicas` / `autoscaling_config` per deployment by the deployment's class name
(`deployment_names` lists them; tests check the files against it).
A relative artifact path is read from the repository root (where `casebook run` writes
runs/<case>/registry), so the file works whatever the directory Serve builds the app in; on a
cluster, give an absolute path on storage every node sees.

Ray is imported inside the functions.
"""

from __future__ import annotations

import importlib
import inspect
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from casebook.catalog import REPO_ROOT, available_cases
from shared.errors import CasebookError

DEPLOY_DIR = REPO_ROOT / "deploy"


class CaseAppArgs(BaseModel):
    """The builder's arguments (the `args:` block of a Serve config file)."""

    model_config = ConfigDict(extra="forbid")

    case: str = Field(description="the case's command-line name, e.g. mobile-keyboard")
    artifact: str | None = Field(
        default=None,
        description="artifact folder or registry; default runs/<case>/registry; a relative "
        "path is read from the repository root",
    )
    topology: str | None = Field(
        default=None,
        description="the app's shape, for a case whose build_app offers more than one "
        "(video-recommendation: one, the default, or stages); default the case's own",
    )


def _package(case: str) -> str:
    cases = available_cases()
    if case not in cases:
        raise CasebookError(f"unknown case {case!r}; available: {', '.join(cases)}")
    return cases[case]


def artifact_root(case: str, artifact: str | Path | None) -> Path:
    """The artifact or registry folder to serve: `artifact` (relative to the repository root
    when relative), or runs/<case>/registry; CasebookError if it does not exist."""
    root = Path(artifact) if artifact else Path("runs") / case / "registry"
    if not root.is_absolute():
        root = REPO_ROOT / root
    if not root.exists():
        raise CasebookError(
            f"no model at {root}; run `casebook run {case}` first or pass another artifact"
        )
    return root


def build(args: CaseAppArgs) -> Any:
    """Application builder for Serve config files: the case's `build_app(artifact)`."""
    if isinstance(args, dict):  # called directly rather than by Serve
        args = CaseAppArgs.model_validate(args)
    pkg = _package(args.case)
    build_app = importlib.import_module(f"cases.{pkg}.serve").build_app
    kwargs = {}
    if args.topology is not None:
        if "topology" not in inspect.signature(build_app).parameters:
            raise CasebookError(f"{args.case} has one topology; drop `topology` from the args")
        kwargs["topology"] = args.topology
    root = artifact_root(args.case, args.artifact)
    return build_app(str(root), **kwargs)


def _children(app: Any) -> list[Any]:
    from ray.serve import Application

    dep = app._bound_deployment  # Ray Serve's Application keeps the bound deployment here
    values = [*dep.init_args, *dep.init_kwargs.values()]
    return [v for v in values if isinstance(v, Application)]


def deployment_names(app: Any) -> list[str]:
    """Every deployment's name in a bound application, the ingress first."""
    names = [app._bound_deployment.name]
    for child in _children(app):
        names += [n for n in deployment_names(child) if n not in names]
    return names


def with_replicas(app: Any, replicas: int) -> Any:
    """The same application with `replicas` replicas of every deployment in it (the ingress and
    the deployments bound into it, as the video case's retriever and ranker)."""
    from ray.serve import Application

    def rebind(a: Any) -> Any:
        dep = a._bound_deployment
        args = [rebind(v) if isinstance(v, Application) else v for v in dep.init_args]
        kwargs = {
            k: rebind(v) if isinstance(v, Application) else v for k, v in dep.init_kwargs.items()
        }
        return dep.options(num_replicas=replicas).bind(*args, **kwargs)

    if replicas < 1:
        raise CasebookError(f"--replicas must be at least 1, got {replicas}")
    return rebind(app)


def config_path(case: str) -> Path:
    """deploy/<case>.yaml."""
    return DEPLOY_DIR / f"{case}.yaml"


def load_config(path: str | Path) -> Any:
    """A Serve config file, validated by Ray Serve's own schema (`ServeDeploySchema`)."""
    import yaml
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    path = Path(path)
    if not path.is_file():
        raise CasebookError(f"Serve config {path} not found")
    try:
        return ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as e:
        raise CasebookError(f"{path}: not a valid Serve config: {str(e).splitlines()[0]}") from None


def deploy_config(path: str | Path, timeout_s: float = 120.0) -> list[str]:
    """Deploy every application of a Serve config file onto the running Serve (after
    `shared.serving.start_local_ray`, whose HTTP options win over the file's), and wait until
    each is RUNNING; CasebookError with Serve's message if one fails. Returns the app names."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    config = load_config(path)
    # The running proxy keeps its loopback host and port; only the applications are deployed.
    client = serve_start()
    client.deploy_apps(ServeDeploySchema(applications=config.applications), _blocking=False)
    names = [a.name for a in config.applications]
    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        failed = [n for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            msg = (apps[failed[0]].message or "").strip().splitlines()
            why = next((line for line in reversed(msg) if line.strip()), "no message")
            raise CasebookError(f"{path}: application {failed[0]} failed: {why}")
        if all(s == "RUNNING" for s in states.values()):
            return names
        if time.monotonic() > deadline:
            raise CasebookError(
                f"{path}: applications not running after {timeout_s:.0f} s: {states}"
            )
        time.sleep(0.5)


def serve_case(
    case: str,
    artifact: str | Path | None,
    host: str,
    port: int,
    replicas: int | None = None,
    config: str | Path | None = None,
) -> None:
    """`casebook serve CASE --replicas N` or `--config FILE`: blocks until Ctrl-C."""
    from shared.serving import (
        block_until_interrupt,
        run_app,
        start_local_ray,
        stop_local_ray,
        wait_for_http,
    )

    if config is not None:
        load_config(config)  # a missing or invalid file is an error before Ray starts (seconds)
        local = start_local_ray(host, port)
        try:
            names = deploy_config(config)
            wait_for_http(f"http://{host}:{port}/-/healthz", timeout_s=30)
        except BaseException:
            stop_local_ray(local)
            raise
        msg = f"serving {', '.join(names)} from {config} on http://{host}:{port}/; Ctrl-C"
        block_until_interrupt(local, msg)
        return
    # A path given on the command line is the user's, from the current directory.
    chosen = None if artifact is None else str(Path(artifact).resolve())
    app = build(CaseAppArgs(case=case, artifact=chosen))
    if replicas is not None:
        app = with_replicas(app, replicas)
    # Direct ingress pins one ingress replica to the port; several replicas share the proxy.
    run_app(app, host=host, port=port, direct_ingress=not replicas or replicas == 1)
