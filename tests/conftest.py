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


@pytest.fixture(scope="session")
def moderation_tiny(tmp_path_factory):
    """A moderation artifact: tiny TF-IDF + image CNN + hash bank, with its golden set and
    monitor reference. Read-only: tests register it in a registry of their own to change it."""
    from cases.content_moderation.cli import monitor_requests
    from cases.content_moderation.config import get_config
    from cases.content_moderation.data import generate_posts
    from cases.content_moderation.predictor import ModerationPredictor
    from cases.content_moderation.train import (
        fit_ad_fusion,
        fit_image_side,
        fit_text_models,
        save_moderation_artifact,
    )
    from shared.golden import finish_artifact

    cfg = get_config("tiny", encoder=False)
    out = tmp_path_factory.mktemp("cm")
    data = generate_posts(cfg, seed=0)
    fit = fit_text_models(cfg, data, 0, out, log=lambda s: None)
    image = fit_image_side(cfg, 0, out, log=lambda s: None)
    fusion, _ = fit_ad_fusion(cfg, data, fit, image, 0)
    art = save_moderation_artifact(out / "artifact", cfg, data, fit, image, fusion, "test")
    golden, reference = monitor_requests(data, 0)
    finish_artifact(art, ModerationPredictor.load, golden, reference, decision_threshold=1.0,
                    decision="auto_remove")  # fmt: skip
    return art


@pytest.fixture(scope="session")
def video_tiny(tmp_path_factory):
    """A video-recommendation artifact from the case's own run on the tiny preset (no feedback
    loop). Read-only: tests register it in a registry of their own to change it."""
    import argparse

    from cases.video_recommendation import cli

    out = tmp_path_factory.mktemp("vr") / "run"
    args = argparse.Namespace(
        preset="tiny", data="builtin", out=out, seed=0, seq_epochs=1, tower_epochs=1, skip_loop=True
    )
    cli.run(args)
    return out / "artifact"


# --- A real headless Chromium for the browser tests (tests/test_pages.py, tests/test_ui.py)

SCREENSHOTS = "CASEBOOK_SCREENSHOTS"  # `make screenshots` sets it: the browser tests save PNGs


def _chromium() -> tuple[str | None, str | None]:
    """(browser, driver) executables of the distribution's Chromium, or None where missing."""
    import shutil
    from pathlib import Path

    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).is_file()), None
    )
    return browser, driver


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Selenium with the system's chromedriver; nothing is downloaded)
    for the session, 1280 px wide. Skips with the reason where no Chromium is installed."""
    import os

    browser_bin, driver_bin = _chromium()
    if browser_bin is None or driver_bin is None:
        pytest.skip(
            "no Chromium here: the browser tests need the distribution's chromium and "
            "chromium-driver (apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev extra")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look online
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser_bin
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",  # everything it loads is on 127.0.0.1
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1280,900",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshot():
    """`screenshot(driver, path)`: with CASEBOOK_SCREENSHOTS set (`make screenshots`), the
    whole page as a PNG at `path`; otherwise nothing."""
    import os

    return _save_screenshot if os.environ.get(SCREENSHOTS) else lambda driver, path: None


def _save_screenshot(driver, path) -> None:
    """The whole page, beyond the window's height, through Chromium's DevTools protocol."""
    import base64

    # The Served-model panel as of now (a page without one has no `cb`).
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "(typeof cb === 'undefined' ? Promise.resolve() : cb.refreshServed()).then(() => done())"
    )
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 2400), "scale": 1},
        },
    )
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
