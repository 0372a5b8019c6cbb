"""`casebook compare` and `casebook ui` on two fake runs written by the real RunReport: the
comparison's numbers, the terminal table, and the runs page in a real headless Chromium."""

import json
from pathlib import Path

import pytest

from casebook.cli import main
from casebook.ui import make_server, start_in_thread
from shared.compare import (
    compare_runs,
    comparison_text,
    diff_values,
    find_runs,
    format_diff,
    read_run,
)
from shared.report import RunReport

CASE = "mobile-keyboard"


def fake_run(root: Path, name: str, top1: float, promoted: bool, version: str) -> Path:
    """A run folder as a case's cli leaves it: metrics.json, report.md, a figure, an artifact
    with its own metrics.json, and a registry record of the version it registered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = root / CASE / name
    registry = root / CASE / "registry"
    (registry / "versions").mkdir(parents=True, exist_ok=True)
    record = {"metric": "top1", "candidate": {"all": top1}, "version": version}
    (registry / "versions" / f"{version}.record.json").write_text(json.dumps(record))
    report = RunReport(CASE, "builtin", "fast", 0, out)
    report.production_model = "lstm_fp32"
    report.table(
        "next_word_test",
        {"trigram": {"top1": 0.40, "top3": 0.60}, "lstm_fp32": {"top1": top1, "top3": 0.70}},
        baseline="trigram",
    )
    report.table("latency", {"lstm_fp32": {"p99_ms": 3.0 + top1}})
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, top1])
    report.figure(fig, "curve.png", "Top-1 by epoch")
    report.extra["registry"] = {"version": version, "promoted": promoted, "registry": str(registry)}
    report.write()
    (out / "artifact").mkdir()
    (out / "artifact" / "metrics.json").write_text("{}")  # not a run: find_runs skips it
    return out


@pytest.fixture()
def runs(tmp_path):
    a = fake_run(tmp_path, "20261201-100000", 0.50, True, "v0001")
    b = fake_run(tmp_path, "20261202-100000", 0.45, False, "v0002")
    return tmp_path, a, b


def test_read_run_and_find_runs(runs):
    root, a, b = runs
    assert find_runs(root) == [b, a]  # newest first; artifact/ and registry/ are not runs
    s = read_run(a)
    assert (s["case"], s["data"], s["preset"], s["production_model"]) == (
        CASE,
        "builtin",
        "fast",
        "lstm_fp32",
    )
    assert s["headline"] == "top1=0.5" and s["promoted"] is True and s["version"] == "v0001"


def test_compare_runs_lines_up_tables_and_differences(runs):
    _, a, b = runs
    diff = compare_runs(read_run(a), read_run(b))
    assert diff["same_case"]
    fields = {s["field"]: s for s in diff["summary"]}
    assert fields["preset"]["same"] and not fields["promoted"]["same"]
    table = {(r["model"], r["metric"]): r for r in diff["tables"][0]["rows"]}
    assert diff["tables"][0]["table"] == "next_word_test"
    r = table[("lstm_fp32", "top1")]
    assert (r["a"], r["b"]) == (0.5, 0.45)
    assert r["diff"] == pytest.approx(-0.05) and r["rel"] == pytest.approx(-0.1)
    assert table[("trigram", "top1")]["diff"] == 0.0
    assert [t["table"] for t in diff["tables"]] == ["next_word_test", "latency"]


def test_diff_values_limits():
    assert diff_values(2.0, 3.0) == (1.0, 0.5)
    assert diff_values(0.0, 1.0) == (1.0, None)  # no relative change from zero
    assert diff_values(None, 1.0) == (None, None)
    assert diff_values("a", 1.0) == (None, None)
    assert diff_values(True, 1.0) == (None, None)  # a flag is not a number
    assert format_diff(-0.05, -0.1) == "-0.05 (-10.0%)"
    assert format_diff(0.0, 0.0) == "+0" and format_diff(None, None) == ""


def test_casebook_compare_prints_the_tables(runs, capsys):
    _, a, b = runs
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == comparison_text(compare_runs(read_run(a), read_run(b)))
    line = next(x for x in out.splitlines() if x.startswith("lstm_fp32") and " top1 " in x)
    assert line.split()[2:] == ["0.5", "0.45", "-0.05", "(-10.0%)"]
    assert main(["compare", str(a), str(a.parent / "missing")]) == 2
    assert "no readable metrics.json" in capsys.readouterr().err


@pytest.fixture()
def ui(runs):
    root = runs[0]
    server = make_server(root, port=0)
    start_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}", runs
    server.shutdown()
    server.server_close()


def test_ui_lists_opens_and_compares_runs_in_a_browser(browser, ui):
    import requests
    from selenium.webdriver.support.ui import WebDriverWait

    url, (root, a, b) = ui
    assert make_server(root, 0).server_address[0] == "127.0.0.1"
    browser.get(f"{url}/")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('tr[data-run]'),"
        " r => Array.from(r.cells, c => c.innerText.trim()))"
    )
    assert [r[2:] for r in rows] == [
        [CASE, b.name, "builtin", "fast", "lstm_fp32", "top1=0.45", "not promoted (v0002)"],
        [CASE, a.name, "builtin", "fast", "lstm_fp32", "top1=0.5", "promoted (v0001)"],
    ]
    # Compare: A is the older run, B the newer.
    browser.find_element("css selector", f'tr[data-run$="{a.name}"] input[name=a]').click()
    browser.find_element("css selector", f'tr[data-run$="{b.name}"] input[name=b]').click()
    browser.find_element("id", "compare").click()
    # The click navigates: wait for the comparison page, not the list still on screen.
    WebDriverWait(browser, 20).until(
        lambda d: d.find_elements("css selector", "table[data-table=next_word_test] tr")
    )
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('table[data-table=next_word_test] tr'),"
        " r => Array.from(r.cells, c => c.innerText.trim()))"
    )
    assert ["lstm_fp32", "top1", "0.5", "0.45", "-0.05 (-10.0%)"] in cells
    assert ["trigram", "top1", "0.4", "0.4", "+0"] in cells
    # A run's report, with its figure loaded.
    browser.get(f"{url}/")
    browser.find_element("link text", a.name).click()
    WebDriverWait(browser, 20).until(
        lambda d: "next_word_test" in d.find_element("tag name", "main").text
    )
    loaded = browser.execute_script(
        "const i = document.querySelector('img'); return i && i.complete && i.naturalWidth"
    )
    assert loaded and loaded > 0
    # Nothing outside the runs folder; a bad comparison is a readable error, not a blank.
    r = requests.get(f"{url}/file", params={"path": "../../etc/passwd"}, timeout=10)
    assert r.status_code == 400 and "outside the runs folder" in r.text
    browser.get(f"{url}/compare?a={a.name}")
    assert "pick a run as A and one as B" in browser.find_element("css selector", ".error").text
