"""Serve config files (deploy/<case>.yaml) and `casebook serve --replicas` (issue 17, section 2):
Ray Serve's own schema accepts each file as is, its import path resolves to the builder, its
deployments are the case's, and one file runs on loopback."""

from __future__ import annotations

import importlib

import pytest
import requests
import yaml

from casebook.cli import available_cases, build_parser
from casebook.serve_apps import (
    DEPLOY_DIR,
    CaseAppArgs,
    artifact_root,
    build,
    config_path,
    deployment_names,
    load_config,
    with_replicas,
)
from shared.errors import CasebookError

CASES = list(available_cases())
CONFIGS = sorted(p.name for p in DEPLOY_DIR.glob("*.yaml"))  # one per case, plus alternatives


def _case_app(case: str, topology: str | None = None):
    """The case's own bound app (binding loads nothing: the path is only read by replicas)."""
    serve_mod = importlib.import_module(f"cases.{available_cases()[case]}.serve")
    if topology is None:
        return serve_mod.build_app("/nonexistent")
    return serve_mod.build_app("/nonexistent", topology=topology)


def test_one_config_per_case():
    assert {"content-moderation", "email-smart-reply", "mobile-keyboard"} <= set(CASES)
    for case in CASES:
        assert config_path(case).is_file(), f"deploy/{case}.yaml missing"


@pytest.mark.parametrize("filename", CONFIGS)
def test_config_is_a_valid_serve_config(filename):
    from ray._common.utils import import_attr  # what Serve resolves import_path with
    from ray.serve.schema import ServeApplicationSchema

    path = DEPLOY_DIR / filename
    doc = yaml.safe_load(path.read_text())
    config = load_config(path)  # ServeDeploySchema.model_validate
    assert config.http_options.host == "127.0.0.1"
    (app,) = config.applications
    assert isinstance(app, ServeApplicationSchema)
    ServeApplicationSchema.model_validate(doc["applications"][0])
    assert import_attr(app.import_path) is build
    args = CaseAppArgs.model_validate(app.args)
    # deploy/<case>.yaml or deploy/<case>-<topology>.yaml, the application named after the case
    assert args.case == app.name and args.case in CASES
    assert filename == f"{args.case}.yaml" or filename == f"{args.case}-{args.topology}.yaml"
    bound = _case_app(args.case, args.topology)
    by_name = {d.name: d for d in app.deployments}
    assert list(by_name) == deployment_names(bound), "config deployments differ from the app's"
    deps = {bound._bound_deployment.name: bound._bound_deployment}
    deps.update({c._bound_deployment.name: c._bound_deployment for c in _children_of(bound)})
    for name, d in by_name.items():
        auto = d.autoscaling_config
        assert d.num_replicas == "auto" and auto, f"{name}: no autoscaling_config"
        assert 1 <= auto["min_replicas"] <= auto["initial_replicas"] <= auto["max_replicas"]
        # The file restates the case's own limit, so the autoscaling target fits under it.
        assert d.max_ongoing_requests == deps[name].max_ongoing_requests
        assert 0 < auto["target_ongoing_requests"] <= d.max_ongoing_requests


def _children_of(app):
    from casebook.serve_apps import _children

    out = []
    for c in _children(app):
        out += [c, *_children_of(c)]
    return out


def test_video_topologies_one_replica_by_default_and_stages_on_request(tmp_path):
    if "video-recommendation" not in CASES:
        pytest.skip("video case absent")
    assert deployment_names(_case_app("video-recommendation")) == ["VideoRecFunnel"]
    stages = _case_app("video-recommendation", "stages")
    assert set(deployment_names(stages)) == {
        "VideoRecRecommender",
        "VideoRecRetriever",
        "VideoRecRankerDeployment",
    }
    # the builder passes the file's topology on; a wrong one, or one for a case without
    # topologies, is a clear error
    args = {"case": "video-recommendation", "artifact": str(tmp_path)}
    assert deployment_names(build({**args, "topology": "stages"})) == deployment_names(stages)
    assert deployment_names(build(args)) == ["VideoRecFunnel"]
    with pytest.raises(CasebookError, match="unknown topology"):
        build({**args, "topology": "three"})
    if "mobile-keyboard" in CASES:
        with pytest.raises(CasebookError, match="one topology"):
            build({"case": "mobile-keyboard", "artifact": str(tmp_path), "topology": "stages"})


def test_with_replicas_reaches_every_deployment():
    if "video-recommendation" not in CASES:
        pytest.skip("video case absent")
    app = _case_app("video-recommendation", "stages")
    scaled = with_replicas(app, 3)
    assert deployment_names(scaled) == deployment_names(app)
    assert scaled._bound_deployment.num_replicas == 3
    assert all(c._bound_deployment.num_replicas == 3 for c in _children_of(scaled))
    assert app._bound_deployment.num_replicas != 3  # the original is untouched
    with pytest.raises(CasebookError):
        with_replicas(app, 0)


def test_builder_refuses_unknown_case_and_missing_artifact(tmp_path):
    with pytest.raises(CasebookError, match="unknown case"):
        build({"case": "no-such-case"})
    with pytest.raises(CasebookError, match="no model at"):
        build({"case": CASES[0], "artifact": str(tmp_path / "missing")})
    assert artifact_root(CASES[0], tmp_path) == tmp_path
    with pytest.raises(Exception, match="extra"):
        CaseAppArgs.model_validate({"case": CASES[0], "artefact": "x"})  # a typo is refused


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications:\n  - name: x\n    import_path: 5\n    bogus: 1\n")
    with pytest.raises(CasebookError, match="not a valid Serve config"):
        load_config(bad)
    with pytest.raises(CasebookError, match="not found"):
        load_config(tmp_path / "none.yaml")


def test_serve_command_takes_replicas_and_config():
    args = build_parser().parse_args(["serve", CASES[0], "--replicas", "3"])
    assert args.replicas == 3 and args.config is None
    args = build_parser().parse_args(["serve", CASES[0], "--config", "deploy/x.yaml"])
    assert str(args.config) == "deploy/x.yaml"


@pytest.fixture(scope="module")
def keyboard_registry(tmp_path_factory):
    """A registry whose champion is a tiny trained trigram (seconds to build)."""
    from cases.mobile_keyboard.baseline import KeyboardKneserNey
    from cases.mobile_keyboard.data import builtin_corpus
    from cases.mobile_keyboard.model import KeyboardVocab
    from cases.mobile_keyboard.predictor import TRIGRAM
    from shared.artifacts import Registry, save_artifact

    if "mobile-keyboard" not in CASES:
        pytest.skip("keyboard case absent")
    root = tmp_path_factory.mktemp("kb")
    corpus = builtin_corpus(800, seed=2)
    vocab = KeyboardVocab.build(corpus.train, 300)
    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    cfg = {"embed_dim": 8, "hidden_dim": 16, "num_layers": 1, "shipped": "kn_full"}
    files = {"vocab.json": vocab.to_json().encode(), TRIGRAM: kn.full_.to_bytes()}
    art = save_artifact(root / "artifact", {}, cfg, {}, "test", files)
    reg = Registry(root / "registry")
    reg.promote(reg.register(art).name)
    return reg


@pytest.mark.serve
def test_keyboard_config_runs_on_loopback(tmp_path, keyboard_registry, serve_port):
    """deploy/mobile-keyboard.yaml as is, but for its artifact (a tiny trained trigram), its
    route and its CPUs (the test Ray has 2), deployed through the Serve config path."""
    from ray import serve

    from casebook.serve_apps import deploy_config

    doc = yaml.safe_load(config_path("mobile-keyboard").read_text())
    app = doc["applications"][0]
    app["args"]["artifact"] = str(keyboard_registry.root)
    app["route_prefix"] = "/kbconfig"
    for d in app["deployments"]:
        d["ray_actor_options"]["num_cpus"] = 0
    path = tmp_path / "mobile-keyboard.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        assert deploy_config(path, timeout_s=180) == ["mobile-keyboard"]
        url = f"http://127.0.0.1:{serve_port}/kbconfig"
        r = requests.post(f"{url}/suggest", json={"context": "do you"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["next_words"]) == 3
        dep = serve.status().applications["mobile-keyboard"].deployments["KeyboardServer"]
        assert dep.status == "HEALTHY"
    finally:
        serve.delete("mobile-keyboard")


@pytest.mark.serve
def test_replicas_run(keyboard_registry, serve_port):
    """`with_replicas(app, 2)` (what `casebook serve --replicas 2` runs): two live replicas."""
    from ray import serve

    from cases.mobile_keyboard.serve import build_app

    app = with_replicas(build_app(keyboard_registry.root, num_cpus=0), 2)
    serve.run(app, name="kb2", route_prefix="/kb2")
    try:
        dep = serve.status().applications["kb2"].deployments["KeyboardServer"]
        assert dep.replica_states.get("RUNNING") == 2, dep.replica_states
        url = f"http://127.0.0.1:{serve_port}/kb2"
        pids = {requests.get(f"{url}/status", timeout=30).json()["pid"] for _ in range(40)}
        assert len(pids) == 2, f"requests reached {len(pids)} replica(s)"
    finally:
        serve.delete("kb2")
