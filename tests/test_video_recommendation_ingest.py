"""Video recommendation: real files with the quirks people's files have (issue 24).

Every loader reads a file written here with BOMs, Windows encodings, CRLF, quoted newlines,
blank and whitespace-only rows, very long rows, extra columns in another order, ratings that
are numbers, empty or junk, non-English text, and a user and an item seen once (under 1% of
rows). A bad row is skipped with its line number; only a file with no usable row is an error.
`casebook check` and `casebook run` share one pipeline (`data.prepare`) and one Data section.
"""

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from casebook.cli import main
from cases.video_recommendation.config import get_config
from cases.video_recommendation.data import (
    gate_interactions,
    load_data,
    load_interactions,
    load_lastfm,
    load_movielens,
    parse_time,
    prepare,
)
from shared.errors import DataError

USERS = ("Zoë", "José", "Müller")


def _bulk(first_line: int, n: int = 100) -> list[str]:
    """n one-line rows (comment,rating,time,user,extra,item): each item once, ratings 1-5."""
    return [
        f"row {k},{k % 5 + 1},{1500001000 + k},{USERS[k % 3]},x,w{k}"
        for k in range(first_line, first_line + n)
    ]


def _quirky_lines(text: str) -> list[str]:
    """The physical lines of a quirky interaction log; comments give each row's line number."""
    return [
        "Comment,Rating,event_time,visitorId,extra,Video_ID",  # 1: header, other order, extras
        "plain,4.5,1500000000,Zoë,x,v1",  # 2: unix seconds
        '"a comment over',  # 3-4: a quoted newline; unix milliseconds
        'two lines",3,1500000000000,José,x,v1',
        "",  # 5: blank
        "   \t  ",  # 6: whitespace only
        f'"{"long " * 40_000}",5,2017-07-14,Müller,x,v2',  # 7: a 200 KB field; an ISO date
        f'"{text}",2,2017-07-14T02:40:00Z,Zoë,x,v3',  # 8: non-English; ISO date-time
        "c,,1500000100,Zoë,x,v4",  # 9: no rating
        "c,n/a,1500000100,José,x,v4",  # 10: a rating that is no number
        "c,-1,1500000100,José,x,v4",  # 11: a negative rating
        "c,3,yesterday,Müller,x,v4",  # 12: a time that is no time
        "c,3,1500000100, ,x,v4",  # 13: no user
        "again,5,1500000500,Zoë,x,v1",  # 14: Zoë watched v1 again
        "c,3",  # 15: too few fields
        "c,4,1500000200,björn,x,v9",  # 16: a user and an item seen once (< 1% of rows)
        *_bulk(17),  # 17-116
    ]


def _write(path, lines, encoding="utf-8-sig", newline="\r\n"):
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


@pytest.mark.parametrize(
    "encoding, text",
    [
        ("utf-8-sig", "日本語のコメント, ещё один"),  # UTF-8 with a BOM, non-Latin text
        ("cp1252", "“café” – déjà vu"),  # Windows-1252: 0x93, 0x94 and 0x96 are cp1252-only
    ],
)
def test_interactions_with_every_quirk(tmp_path, encoding, text):
    f = _write(tmp_path / "log.csv", _quirky_lines(text), encoding)
    d = load_interactions(f)
    log = d.log
    assert log.rows_read == 114  # lines 2 and 3-4, 2 blank, lines 7-16, 100 more
    assert log.skipped == {
        "blank row": [5, 6],
        "rating/weight is empty": [9],
        "rating/weight is not a number >= 0": [10, 11],
        "timestamp is not a time": [12],
        "empty user or item": [13],
        "fewer than 6 fields": [15],
    }
    assert log.removed == {"repeated user-item events (the first kept)": 1}
    assert "user Zoë, item v1 (x2)" in log.examples["repeated user-item events (the first kept)"]
    assert log.rows_kept == 114 - 8 - 1 == d.interactions["user"].size
    assert sorted(d.user_ids) == sorted([*USERS, "björn"])  # decoded, whatever the encoding
    assert d.n_items == 104 and d.has_time and not d.weight_is_count
    if encoding == "cp1252":
        assert log.encoding == "cp1252" and any("read as cp1252" in n for n in log.notes)

    def row(user, item):
        u, i = list(d.user_ids).index(user), list(d.item_ids).index(item)
        m = (d.interactions["user"] == u) & (d.interactions["item"] == i)
        assert m.sum() == 1
        return d.interactions["timestamp"][m][0], d.interactions["weight"][m][0]

    assert row("Zoë", "v1") == (1500000000, pytest.approx(0.9))  # the first watch; 4.5 / 5
    assert row("José", "v1")[0] == 1500000000  # milliseconds -> seconds
    assert row("Müller", "v2")[0] == 1499990400  # 2017-07-14, UTC
    assert row("Zoë", "v3")[0] == 1500000000  # 2017-07-14T02:40:00Z
    notes = " ".join(log.notes)
    assert "1 timestamps in milliseconds" in notes and "2 timestamps are ISO dates" in notes
    assert "user `visitorid`, item `video_id`, weight `rating`, time `event_time`" in notes


def test_a_tsv_in_another_order_with_column_options(tmp_path):
    lines = ["Plays\tFilm\tTS\tKunde\tNotiz"]
    rng = np.random.default_rng(0)
    for k in range(60):
        lines.append(f"{rng.integers(1, 900)}\tfilm-{k % 17}\t{1_600_000_000 + k}\tk{k % 7}\tä")
    f = _write(tmp_path / "log.tsv", lines, "utf-8", "\n")
    with pytest.raises(DataError, match=r"no user column .* name it with \?user=COLUMN"):
        load_data(f"interactions:{f}", get_config("tiny"))
    d = load_data(f"interactions:{f}?user=Kunde&item=film", get_config("tiny"))
    assert (d.n_users, d.n_items, d.interactions["user"].size) == (7, 17, 60)
    assert d.has_time and d.weight_is_count  # whole play counts stay counts
    assert set(d.user_ids) == {f"k{j}" for j in range(7)}
    assert d.interactions["weight"].max() > 1
    with pytest.raises(DataError, match=r"\?time=when names no column"):
        load_data(f"interactions:{f}?user=Kunde&item=film&time=when", get_config("tiny"))
    # A header with no known name at all is still a header when the options name its columns.
    g = _write(tmp_path / "plain.tsv", ["Kunde\tFilm", *(f"k{j % 5}\tf{j}" for j in range(9))])
    d = load_interactions(g, {"user": "kunde", "item": "FILM"})
    assert d.log.rows_read == 9 and (d.n_users, d.n_items) == (5, 9) and not d.has_time


@pytest.mark.parametrize("name, counts", [("Rating", False), ("stars", False), ("plays", True)])
def test_whole_star_ratings_are_ratings_and_whole_plays_are_counts(tmp_path, name, counts):
    rows = [f"user,item,{name}", *(f"u{k % 3},v{k % 4},{k % 5 + 1}" for k in range(12))]
    d = load_interactions(_write(tmp_path / "a.csv", rows))
    assert d.weight_is_count == counts
    assert d.interactions["weight"].max() == (5.0 if counts else pytest.approx(1.0))


def test_a_file_without_a_header_by_position_and_by_option(tmp_path):
    lines = [f"{k % 5},{100 + k % 11},{1_600_000_000_000 + 1000 * k}" for k in range(40)]
    f = _write(tmp_path / "a.csv", lines, "utf-8", "\r\n")
    d = load_interactions(f)
    assert d.has_time and d.log.rows_read == 40
    assert d.interactions["timestamp"].max() < 2e9  # milliseconds read as seconds
    assert set(d.user_ids.tolist()) == set(range(5))
    swapped = load_interactions(f, {"user": "2", "item": "1"})  # 1-based positions
    assert set(swapped.user_ids.tolist()) == set(range(100, 111))


def test_a_file_without_a_header_in_amazon_order(tmp_path):
    # user,item,rating,timestamp (Amazon's ratings files, MovieLens' order), no header.
    lines = [f"A{k % 6},B{k % 9},{k % 5 + 1}.0,{1_400_000_000 + 3600 * k}" for k in range(30)]
    d = load_interactions(_write(tmp_path / "ratings_Beauty.csv", lines, "utf-8", "\n"))
    assert d.has_time and d.interactions["timestamp"].min() >= 1_400_000_000
    assert d.interactions["weight"].max() == pytest.approx(1.0) and not d.weight_is_count
    assert any("read as user,item,rating,timestamp" in n for n in d.log.notes)
    # user,item,timestamp,weight (the order without a header otherwise) stays as it is
    lines = [f"A{k % 6},B{k % 9},{1_400_000_000 + 3600 * k},{k % 7 + 1}" for k in range(30)]
    d = load_interactions(_write(tmp_path / "b.csv", lines, "utf-8", "\n"))
    assert d.interactions["timestamp"].min() >= 1_400_000_000 and d.weight_is_count


def test_parse_time_forms():
    assert parse_time("1500000000") == (1500000000, "s")
    assert parse_time("1500000000123") == (1500000000, "ms")
    assert parse_time(" 2017-07-14 02:40:00 ") == (1500000000, "iso")
    assert parse_time("2017/07/14")[0] == 1499990400
    assert parse_time("2017-07-14T04:40:00+02:00") == (1500000000, "iso")
    for junk in ("", "soon", "-1", "nan", "inf"):
        assert parse_time(junk) == (None, "")
    t = datetime(2020, 2, 29, tzinfo=timezone.utc).timestamp()
    assert parse_time("2020-02-29")[0] == t


def test_a_file_with_no_usable_row_is_one_error(tmp_path):
    f = _write(tmp_path / "bad.csv", ["user,item,rating", ",b,3", "a, ,2", " ", ",,", "c"])
    with pytest.raises(DataError, match="no usable row") as e:
        load_interactions(f)
    assert "\n" not in str(e.value) and "5 read, 5 skipped" in str(e.value)


def test_a_column_in_which_nothing_parses_is_dropped_not_every_row(tmp_path):
    rows = ["user,item,rating,date", *(f"u{k % 4},v{k},A+,{k}/3/2020" for k in range(12))]
    d = load_interactions(_write(tmp_path / "a.csv", rows))
    assert d.log.rows_kept == 12 and not d.has_time and not d.weight_is_count
    assert np.all(d.interactions["weight"] == 1.0)
    notes = " ".join(d.log.notes)
    assert "`rating` holds no number" in notes and "`date` holds no time" in notes
    assert "columns: user `user`, item `item`" in notes and "weight `" not in notes


# --- MovieLens and Last.fm through the same reader ----------------------------------------------


def test_movielens_csv_quirks(tmp_path):
    ratings = ["timestamp,rating,movieId,userId,source"]  # another order, an extra column
    for k in range(30):
        ratings.append(f"{964982703 + k},{(k % 10 + 1) / 2},{k % 6},{k % 4 + 1},web")
    ratings[5:5] = ["", "964982703,great,3,2,web", "964982800,4.0,2,1,web"]  # blank; junk; repeat
    _write(tmp_path / "ratings.csv", ratings, "utf-8-sig", "\r\n")
    movies = ["movieId,title,genres"]
    movies += [
        f'{j},"Title, the ({j})\r\npart two",{"Drama" if j % 2 else "Comedy"}|War' for j in range(6)
    ]
    _write(tmp_path / "movies.csv", movies, "utf-8", "\r\n")
    d = load_movielens(tmp_path)
    assert d.log.rows_read == 33
    assert d.log.skipped == {"blank row": [6], "rating/weight is not a number >= 0": [7]}
    assert d.log.removed["repeated user-item events (the first kept)"] >= 1
    assert d.interactions["weight"].max() == pytest.approx(1.0)  # rating / 5
    t = d.item_topic
    assert set(t.tolist()) == {0, 1}  # Drama and Comedy from the quoted multi-line titles
    ids = list(d.item_ids)
    assert t[ids.index(1)] == t[ids.index(3)] != t[ids.index(2)]


def test_movielens_dat_and_udata_quirks(tmp_path):
    dat = tmp_path / "ml1m"
    dat.mkdir()
    rows = [f"{k % 3 + 1}::{10 + k % 5}::{k % 5 + 1}::{978300760 + k}" for k in range(20)]
    rows[3:3] = ["   ", "7::11"]  # whitespace only; too few fields
    _write(dat / "ratings.dat", rows, "latin-1", "\r\n")
    _write(dat / "movies.dat", ["10::Café (1999)::Drama", "11::Ça::Comedy|Drama"], "latin-1")
    d = load_movielens(dat)
    assert d.log.skipped == {"blank row": [4], "fewer than 4 fields": [5]}
    assert d.n_users == 3 and d.log.rows_kept == d.interactions["user"].size == 15
    ids, t = list(d.item_ids), d.item_topic
    assert t[ids.index(10)] >= 0 and t[ids.index(11)] >= 0 and t[ids.index(10)] != t[ids.index(11)]
    assert t[ids.index(12)] == -1  # not in movies.dat
    udata = tmp_path / "ml100k"
    udata.mkdir()
    _write(
        udata / "u.data", ["196\t242\t3\t881250949", "", "186\t302\t3\t891717742"], "utf-8", "\n"
    )
    d = load_movielens(udata)
    assert d.log.rows_read == 3 and d.log.skipped == {"blank row": [2]} and d.n_users == 2


def test_lastfm_quirks(tmp_path):
    lines = ["userID\tartistID\tweight\tnote"]
    lines += [f"{2 + k % 4}\t{50 + k % 9}\t{(k * 37) % 5000 + 1}\tü" for k in range(36)]
    lines[10] = "3\t51\t-5\tü"  # a negative play count
    lines.insert(20, "")
    _write(tmp_path / "user_artists.dat", lines, "utf-8-sig", "\r\n")
    d = load_lastfm(tmp_path)
    assert d.log.skipped == {"rating/weight is not a number >= 0": [11], "blank row": [21]}
    assert not d.has_time and d.weight_is_count
    assert d.interactions["weight"].min() >= 1


# --- the gate: the rest of the log is the reference ---------------------------------------------


def _log(path, rng, n=4000, hit_share=0.0, flood_window=None):
    """user,item,score,timestamp over 10 windows of n/10 rows; `hit_share` of every window is
    one item ("hit"); with `flood_window`, half of that window is item "bot"."""
    rows = ["user,item,score,timestamp"]
    for t in range(n):
        item = f"v{rng.integers(0, 2000)}"
        if rng.random() < hit_share:
            item = "hit"
        if flood_window is not None and t // (n // 10) == flood_window and t % 2 == 0:
            item = "bot"
        rows.append(f"{rng.integers(0, 300)},{item},{rng.integers(1, 11) / 2},{t}")
    return _write(path, rows, "utf-8", "\n")


def test_a_property_every_batch_shares_is_not_refused(tmp_path):
    # One item is 10% of every window, and ratings run to 5 in half steps in a `score` column:
    # both belong to the whole log, so no window is refused.
    d = load_interactions(_log(tmp_path / "a.csv", np.random.default_rng(0), hit_share=0.1))
    assert d.interactions["weight"].max() == pytest.approx(1.0)  # score / 5, its largest
    n = d.interactions["user"].size
    d, gate = gate_interactions(d, tmp_path / "q")
    assert gate["rows"]["time windows"] == {"batches": 10, "passed": 10, "quarantined": 0}
    assert d.interactions["user"].size == n


def test_a_flooded_window_is_refused_against_the_rest_and_counted(tmp_path):
    f = _log(tmp_path / "a.csv", np.random.default_rng(1), flood_window=3)
    data, gate, section = prepare(f"interactions:{f}", get_config("tiny"), 0, tmp_path / "q")
    assert gate["rows"]["time windows"]["quarantined"] == 1
    assert "value 'bot'" in gate["failures"][0]
    refused = data.log.removed["in a batch the data gate refused"]
    assert 300 < refused < 500  # one window of about 400 rows, not trained on
    kept_items = data.item_ids[data.interactions["item"]]
    assert np.sum(kept_items == "bot") < 20  # the flood went with its window
    assert data.log.rows_kept == data.interactions["user"].size
    assert "| removed: in a batch the data gate refused |" in section
    assert "1 quarantined" in section and "value 'bot'" in section


def test_a_window_that_is_one_item_is_refused_though_it_is_a_fifth_of_the_log(tmp_path):
    # 1,000 rows, 5 windows; the last is 200 bot accounts replaying one video. Against a
    # reference that held that window (20% "bot") its share would pass (limit 5 x 20%); against
    # the rest of the log (no "bot") it is refused.
    rng = np.random.default_rng(2)
    rows = ["user,item,timestamp"]
    rows += [f"u{rng.integers(0, 200)},v{t},{t}" for t in range(800)]  # no pair repeats
    rows += [f"bot{t},bot,{t}" for t in range(800, 1000)]
    d = load_interactions(_write(tmp_path / "a.csv", rows))
    d, gate = gate_interactions(d, tmp_path / "q")
    assert gate["rows"]["time windows"] == {"batches": 5, "passed": 4, "quarantined": 1}
    assert gate["failures"][0].startswith("batch 4: ") and "value 'bot'" in gate["failures"][0]
    assert "bot" not in set(d.item_ids[d.interactions["item"]].tolist())


# --- casebook check and run share the Data section ------------------------------------------------


def _small_log(path):
    rng = np.random.default_rng(3)
    rows = ["item_id;user_id;watch_time;ts"]  # ; as the delimiter, names by alias
    for k in range(2400):
        u = int(rng.integers(0, 120))
        item = (u % 6) * 200 + int(rng.integers(0, 200))  # six taste groups of 200 videos
        rows.append(f"v{item};u{u};{rng.integers(1, 600)};{k}")
    rows.insert(50, "v1;u1;oops;51")
    return _write(path, rows, "utf-8-sig", "\r\n")


def test_casebook_check_exits_0_and_writes_the_data_report(tmp_path, capsys):
    f = _small_log(tmp_path / "log.csv")
    assert (
        main(
            [
                "check",
                "video-recommendation",
                "--data",
                f"interactions:{f}",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    report = (tmp_path / "c" / "data_report.md").read_text()
    assert "| read | 2,401 |" in report
    assert "- skipped (rating/weight is not a number >= 0): line 51" in report
    assert "Split: train" in report and "time windows: 10 batches" in report
    bad = _write(tmp_path / "bad.csv", ["user,item", ",x", "y,"])
    capsys.readouterr()
    code = main(
        [
            "check",
            "video-recommendation",
            "--data",
            f"interactions:{bad}",
            "--out",
            str(tmp_path / "d"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no usable row" in err and len(err.splitlines()) == 1


def test_a_fast_run_reports_the_same_data_section_as_check(tmp_path):
    f = _small_log(tmp_path / "log.csv")
    spec = f"interactions:{f}"
    assert (
        main(["check", "video-recommendation", "--data", spec, "--out", str(tmp_path / "c")]) == 0
    )
    argv = [
        "run",
        "video-recommendation",
        "--data",
        spec,
        "--preset",
        "fast",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--seq-epochs", "1", "--tower-epochs", "1"]) == 0
    checked = (tmp_path / "c" / "data_report.md").read_text().split("\n\n", 1)[1].strip()
    report = (tmp_path / "r" / "report.md").read_text()
    assert checked in report
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    log = doc["extra"]["data"]
    assert log["rows_read"] == 2401 and log["skipped"]["rating/weight is not a number >= 0"][
        "lines"
    ] == [51]
    assert log["rows_kept"] == 2400 - sum(r["count"] for r in log["removed"].values())
    assert doc["tables"]["retrieval"]["served"]["ndcg@10"] >= 0
