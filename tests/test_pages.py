"""Each case's page (`GET /`) in a real headless Chromium, against its live Ray Serve app.

For every case: load the page, type an input, and check that what the page shows is what the
API answers for the same input (the page reads the API's field names, so renaming one breaks
these tests), that the "Served model" panel shows /version and /status, and that a bad input
shows the API's error on the page. One module starts the four apps once (tiny artifacts shared
with the serving tests, tests/conftest.py). `make screenshots` saves each page as
cases/<case>/page/screenshot.png.
"""

from pathlib import Path

import pytest
import requests

CASES = Path(__file__).resolve().parent.parent / "cases"
WAIT_S = 30  # a page's answer on a loaded 2-core machine


@pytest.fixture(scope="module")
def apps(serve_port, tmp_path_factory, keyboard_trigram, moderation_tiny, smart_reply_tiny,
         video_tiny):  # fmt: skip
    """The four apps on the session's Serve proxy, each under its own prefix."""
    from ray import serve

    from cases.content_moderation.serve import build_app as moderation
    from cases.email_smart_reply.serve import build_app as smart_reply
    from cases.mobile_keyboard.serve import build_app as keyboard
    from cases.video_recommendation.serve import build_app as video
    from shared.artifacts import Registry

    def registry(art):
        reg = Registry(tmp_path_factory.mktemp("pages") / "registry")
        reg.promote(reg.register(art).name)
        return str(reg.root)

    vr = reranking(video_tiny, tmp_path_factory.mktemp("pages-vr") / "artifact")

    for name, app in (
        ("kb", keyboard(registry(keyboard_trigram[0]), num_cpus=0)),
        ("cm", moderation(registry(moderation_tiny), num_cpus=0)),
        ("esr", smart_reply(registry(smart_reply_tiny[0]), num_cpus=0)),
        ("vr", video(registry(vr))),
    ):
        serve.run(app, name=f"page-{name}", route_prefix=f"/{name}")
    base = f"http://127.0.0.1:{serve_port}"
    return {name: f"{base}/{name}" for name in ("kb", "cm", "esr", "vr")}  # serve_port deletes


def reranking(art: Path, dest: Path, weight: float = 0.5) -> Path:
    """A copy of the tiny video artifact that re-ranks with MMR weight `weight`, its golden set
    recorded again. The tiny run's validation picks weight 0 (no re-ranking: no item moves), and
    the page must show re-rank moves."""
    import json
    import shutil

    from cases.video_recommendation.predictor import VideoRecPredictor
    from shared.artifacts import rewrite_artifact
    from shared.golden import finish_artifact

    shutil.copytree(art, dest)
    config = json.loads((dest / "config.json").read_text())
    config["hparams"]["rerank_weight"] = weight
    rewrite_artifact(dest, {"config.json": json.dumps(config).encode()})
    golden = json.loads((dest / "golden.json").read_text())["requests"]
    return finish_artifact(dest, VideoRecPredictor.load, golden, golden)


def post(url: str, body: dict) -> dict:
    r = requests.post(url, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait(driver, condition, what: str):
    """Wait for `condition(driver)` to be truthy; fail naming `what` and any error on the page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except TimeoutException:
        errors = [e.text for e in driver.find_elements("css selector", ".cb-error")]
        pytest.fail(f"page never showed {what}; errors on the page: {errors}")


def fixed4(x: float) -> str:
    """JavaScript's x.toFixed(4): as Python's format, but -0.0 prints as 0.0000."""
    return f"{x + 0.0:.4f}"


def texts(driver, css: str) -> list[str]:
    """The visible text of every element `css` selects, read in one step in the page (the page
    redraws on every answer; element handles held across steps would go stale)."""
    js = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim())"
    return driver.execute_script(js, css)


def text(driver, css: str) -> str:
    found = texts(driver, css)
    return found[0] if found else ""


def table(driver, css: str) -> list[list[str]]:
    """The cells of the rows `css` selects, as text, read in one step."""
    js = (
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " r => Array.from(r.cells, c => c.innerText.trim()))"
    )
    return driver.execute_script(js, css)


def open_page(driver, url: str) -> None:
    """Load the page and wait for its Served-model panel to show the served version."""
    version = requests.get(f"{url}/version", timeout=30).json()["serving"]
    driver.get(f"{url}/")
    wait(driver, lambda d: d.find_elements("id", "cb-version"), "the served version")
    assert text(driver, "#cb-version") == version
    panel = text(driver, "#cb-served")
    assert "null" not in panel and "[object" not in panel and "n/a" not in panel


def error_on_page(driver, box: str) -> str:
    return wait(driver, lambda d: text(d, f"#{box} .cb-error"), f"an error in #{box}")


def test_page_html_inlines_the_shared_assets(tmp_path):
    from shared.errors import CasebookError
    from shared.serving import PAGE_MARKER, page_html

    for case in ("mobile_keyboard", "content_moderation", "email_smart_reply",
                 "video_recommendation"):  # fmt: skip
        html = page_html(CASES / case / "page" / "index.html")
        assert PAGE_MARKER not in html and "const cb = " in html and "--accent" in html
        assert "http://" not in html and "https://" not in html  # nothing from the network
    bare = tmp_path / "index.html"
    bare.write_text("<html><head></head></html>")
    with pytest.raises(CasebookError, match="no <!-- casebook:common -->"):
        page_html(bare)
    with pytest.raises(CasebookError, match="cannot read"):
        page_html(tmp_path / "missing.html")


@pytest.mark.serve
def test_page_is_served_as_one_html_document(apps):
    r = requests.get(f"{apps['kb']}/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<!-- casebook:common -->" not in r.text and "const cb = " in r.text  # inlined
    assert "http://" not in r.text and "https://" not in r.text  # nothing from the network
    schema = requests.get(f"{apps['kb']}/openapi.json", timeout=30).json()
    assert "/" not in schema["paths"] and "/suggest" in schema["paths"]


@pytest.mark.serve
def test_keyboard_page_suggests_on_every_keystroke(browser, apps, screenshot):
    url = apps["kb"]
    open_page(browser, url)
    box = browser.find_element("id", "text")
    box.send_keys("do you want to se")
    want = post(f"{url}/suggest", {"context": "do you want to", "prefix": "se"})
    assert want["completions"]  # the trigram knows words starting "se"
    wait(browser, lambda d: texts(d, "#completions li") == want["completions"], "the completions")
    assert texts(browser, "#next-words li") == want["next_words"]
    assert texts(browser, "#corrections li") == want["corrections"]
    assert text(browser, "#sent-prefix") == '"se"'
    assert text(browser, "#latency").endswith(" ms")
    assert "keystrokes" in text(browser, "#latency-median")
    assert texts(browser, "#cb-counters dd") == ["kn_full"]  # /status's "shipped"
    screenshot(browser, CASES / "mobile_keyboard" / "page" / "screenshot.png")
    # A space ends the word: no prefix, the next words after the whole context.
    box.send_keys("e ")
    want = post(f"{url}/suggest", {"context": "do you want to see", "prefix": ""})
    wait(browser, lambda d: texts(d, "#next-words li") == want["next_words"], "the next words")
    assert texts(browser, "#completions li") == []
    browser.find_element("css selector", "#next-words li").click()  # accept a suggestion
    wait(browser, lambda d: d.find_element("id", "text").get_attribute("value").endswith(
        f"see {want['next_words'][0]} "), "the accepted word")  # fmt: skip
    # Bad input: an empty box is refused by the API, and the page says why.
    box.send_keys("\b" * 60)
    assert "context and prefix are both empty" in error_on_page(browser, "error")
    assert texts(browser, "#completions li") == []


@pytest.mark.serve
def test_moderation_page_shows_scores_thresholds_and_action(browser, apps, screenshot):
    from cases.content_moderation.data import _SCAM

    url = apps["cm"]
    open_page(browser, url)
    post_text = "you are a worthless idiot and everyone hates you"
    browser.find_element("id", "post").send_keys(post_text)
    browser.find_element("id", "moderate").click()
    want = post(f"{url}/moderate", {"text": post_text, "kind": "post"})
    wait(browser, lambda d: text(d, "#action") == want["action"], "the action")
    assert text(browser, "#reason") == want["reason"]
    assert text(browser, "#hash-match") == "no match"
    rows = table(browser, "#policies tbody tr")
    assert [r[0] for r in rows] == list(want["scores"])
    for policy, score, _, review, remove, _ in rows:
        th = want["thresholds"][policy]
        assert score == fixed4(want["scores"][policy])
        assert [review, remove] == [f"{th['review']:.3f}", f"{th['remove']:.3f}"]
    assert want["priority"] is None  # not sent to review: no priority on the page
    assert not browser.find_element("id", "queue-priority").is_displayed()
    # A post sent to review: its queue priority at the reach typed on the page.
    queued = "click here to win"
    want = post(f"{url}/moderate", {"text": queued, "kind": "post", "reach": 2500})
    assert want["action"] == "review"
    box = browser.find_element("id", "post")
    box.clear()
    box.send_keys(queued)
    reach = browser.find_element("id", "reach")
    reach.clear()
    reach.send_keys("2500")
    browser.find_element("id", "moderate").click()
    wait(browser, lambda d: text(d, "#action") == "review", "the review action")
    policy = want["priority_policy"]
    assert float(text(browser, "#priority")) == pytest.approx(want["priority"], abs=0.006)
    assert text(browser, "#priority-policy") == policy
    assert float(text(browser, "#severity")) == want["severity"]
    assert text(browser, "#queue-reach") == "2,500"
    assert text(browser, "#priority-p") == fixed4(want["scores"][policy])
    screenshot(browser, CASES / "content_moderation" / "page" / "screenshot.png")
    # A known-bad text is removed by the hash bank before any model.
    known = _SCAM[0].format(amount="500 dollars", url="http://bit.ly/x")
    box.clear()
    box.send_keys(known)
    browser.find_element("id", "moderate").click()
    wait(browser, lambda d: text(d, "#hash-match").startswith("match: known-bad item"), "a match")
    assert text(browser, "#action") == "remove"
    # The monitor counted this page's requests.
    status = requests.get(f"{url}/status", timeout=30).json()
    browser.execute_script("cb.refreshServed()")
    wait(browser, lambda d: text(d, "#cb-observed") == str(status["monitor"]["observed"]), "count")
    # Bad input: a blank post gets the API's 422 message on the page.
    box.clear()
    box.send_keys("   ")
    browser.find_element("id", "moderate").click()
    assert "text is blank" in error_on_page(browser, "error")
    assert not browser.find_element("id", "result").is_displayed()
    # A reach of 0 views is refused with the API's message.
    box.send_keys("hello there")
    reach.clear()
    reach.send_keys("0")
    browser.find_element("id", "moderate").click()
    wait(browser, lambda d: "reach" in text(d, "#error .cb-error"), "the reach error")


@pytest.mark.serve
def test_smart_reply_page_suggests_and_composes(browser, apps, screenshot):
    url = apps["esr"]
    open_page(browser, url)
    email = "Can we meet tomorrow at 3pm to go over the slides?"
    browser.find_element("id", "email").send_keys(email)
    browser.find_element("id", "suggest").click()
    want = post(f"{url}/suggest", {"message": email, "k": 3})
    label = "triggers" if want["triggered"] else "does not trigger"
    wait(browser, lambda d: text(d, "#triggered") == label, "the trigger")
    assert fixed4(want["trigger_score"]) in text(browser, "#trigger-score")
    if want["suggestions"]:
        assert table(browser, "#replies tbody tr") == [
            [s["text"], fixed4(s["score"])] for s in want["suggestions"]
        ]
    # Smart Compose on every keystroke of the reply.
    browser.find_element("id", "reply").send_keys("sounds go")
    want = post(f"{url}/compose", {"message": email, "prefix": "sounds go"})
    shown = want["completion"] or "(no confident completion)"
    wait(browser, lambda d: text(d, "#completion") == shown, "the completion")
    screenshot(browser, CASES / "email_smart_reply" / "page" / "screenshot.png")
    # Bad input: k out of range is the API's 422, shown on the page.
    k = browser.find_element("id", "k")
    k.clear()
    k.send_keys("9")
    browser.find_element("id", "suggest").click()
    assert "k:" in error_on_page(browser, "error")


@pytest.mark.serve
def test_video_page_shows_the_feed_with_sources_scores_and_moves(browser, apps, screenshot):
    url = apps["vr"]
    open_page(browser, url)
    browser.find_element("id", "recommend").click()
    want = post(f"{url}/recommend", {"user_id": 1, "k": 10})

    def feed(d):
        return [r[1:5] for r in table(d, "#feed tbody tr")]  # video, source, score, move

    def shown(answer):
        """The rows the page should show: the re-rank move is pre_rank minus the place served."""
        return [[f"video {x['item']}", x["source"], fixed4(x["score"]),
                 f"{x['pre_rank'] - i:+d}" if x["pre_rank"] != i else "="]
                for i, x in enumerate(answer["items"])]  # fmt: skip

    rows = shown(want)
    wait(browser, lambda d: feed(d) == rows, "the feed")
    # The artifact re-ranks with weight 0.5 (`reranking`): some items moved.
    assert {r[3] for r in rows} != {"="}, "no re-rank move to show"
    assert text(browser, "#model-version") == f"model {want['model_version']}"
    # Watching a video adds it to the history the next request carries.
    first = want["items"][0]["item"]
    browser.find_element("css selector", "#feed tbody tr button").click()
    want = post(f"{url}/recommend", {"user_id": 1, "k": 10, "history": [first]})
    rows = shown(want)
    wait(browser, lambda d: feed(d) == rows, "the feed after a click")
    assert text(browser, "#history") == str(first)
    screenshot(browser, CASES / "video_recommendation" / "page" / "screenshot.png")
    # Anonymous: no user id and an empty history is the cold-start list.
    browser.find_element("id", "anonymous").click()
    want = post(f"{url}/recommend", {"k": 10, "history": []})
    assert want["cold_start"]
    rows = shown(want)
    wait(browser, lambda d: feed(d) == rows, "the cold-start feed")
    assert text(browser, "#flags").startswith("cold start")
    # Bad input: k = 0 is refused by the API, and the page says so.
    k = browser.find_element("id", "k")
    k.clear()
    k.send_keys("0")
    browser.find_element("id", "recommend").click()
    assert "k:" in error_on_page(browser, "error")
