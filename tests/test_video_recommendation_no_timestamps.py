"""Video recommendation on data without timestamps (issue 16): HetRec Last.fm and user,item CSVs.

`write_lastfm` writes a realistic `user_artists.dat`: tab-separated `userID\tartistID\tweight`
with a header, sorted by user then artist id (as the HetRec release is), Zipf artist
popularity, each user's artists drawn mostly from two or three taste clusters, and play counts
from a heavy-tailed (log-normal) distribution.
"""

import argparse
import json

import numpy as np
import pytest

from cases.video_recommendation.config import get_config
from cases.video_recommendation.data import load_data, load_interactions, load_lastfm
from cases.video_recommendation.train import confidence, make_split


def write_lastfm(path, n_users=120, n_artists=300, per_user=(8, 30), n_clusters=6, seed=0):
    """A `user_artists.dat` like HetRec Last.fm's (ids are not contiguous there either)."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, n_clusters, n_artists)
    pop = 1.0 / np.arange(1, n_artists + 1) ** 0.9
    pop = pop[rng.permutation(n_artists)]  # popularity unrelated to the id
    artist_id = np.sort(rng.choice(np.arange(1, 4 * n_artists), n_artists, replace=False))
    lines = ["userID\tartistID\tweight"]
    for u in range(n_users):
        likes = rng.choice(n_clusters, 2, replace=False)
        p = pop * np.where(np.isin(cluster, likes), 20.0, 1.0)
        n = int(rng.integers(per_user[0], per_user[1] + 1))
        chosen = rng.choice(n_artists, n, replace=False, p=p / p.sum())
        plays = np.maximum(1, rng.lognormal(5.0, 1.5, n)).astype(int)
        for a, w in sorted(zip(artist_id[chosen], plays, strict=True)):
            lines.append(f"{2 + 3 * u}\t{a}\t{w}")
    path.mkdir(parents=True, exist_ok=True)
    (path / "user_artists.dat").write_text("\n".join(lines) + "\n")
    return path


def test_lastfm_has_no_time_and_its_weights_are_play_counts(tmp_path):
    d = load_lastfm(write_lastfm(tmp_path / "lastfm"))
    assert not d.has_time and d.weight_is_count
    assert np.all(d.interactions["timestamp"] == 0)
    assert d.interactions["weight"].min() >= 1 and d.interactions["weight"].max() > 100
    assert any("no timestamps" in n for n in d.notes)


def test_the_held_out_item_is_not_the_highest_id(tmp_path):
    # The bug of issue 16: in id order the "last" watch is always the user's highest id.
    d = load_lastfm(write_lastfm(tmp_path / "lastfm"))
    s = make_split(d, seed=0)
    assert s.protocol == "random_leave_one_out"
    users = s.test_users
    assert len(users) == d.n_users  # every user has 8+ artists
    it = d.interactions
    highest = np.array([it["item"][it["user"] == u].max() for u in users])
    assert np.mean(s.test_item[users] == highest) < 0.2  # about 1 / 19 by chance
    assert np.all(s.test_item[users] != s.val_item[users])
    # held-out items are not in the history they are predicted from
    assert s.X_train[users, s.test_item[users]].sum() == 0
    assert s.X_trainval[users, s.test_item[users]].sum() == 0
    assert s.X_trainval[users, s.val_item[users]].sum() == len(users)
    # seeded: the same seed holds out the same items, another seed others
    assert np.array_equal(make_split(d, seed=0).test_item, s.test_item)
    assert not np.array_equal(make_split(d, seed=1).test_item, s.test_item)


def test_timestamps_still_hold_out_the_last_watch(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("user,item,timestamp\n1,30,1\n1,10,2\n1,20,3\n1,40,4\n")
    s = make_split(load_interactions(f), seed=3)
    assert s.protocol == "leave_last_out"
    d = load_interactions(f)
    assert s.test_item[0] == list(d.item_ids).index(40)
    assert s.val_item[0] == list(d.item_ids).index(20)


@pytest.mark.parametrize(
    "text, counts",
    [
        ("user,item\n1,10\n1,20\n2,10\n", False),
        ("1,10\n1,20\n2,10\n", False),  # two columns, no header: user,item
        ("user,item,weight\n1,10,3\n1,20,7\n2,10,1\n", True),
        ("userId,itemId,rating\n1,10,4.5\n1,20,3\n2,10,1\n", False),
    ],
)
def test_interactions_without_a_timestamp_column(tmp_path, text, counts):
    f = tmp_path / "a.csv"
    f.write_text(text)
    d = load_interactions(f)
    assert not d.has_time and d.weight_is_count == counts
    assert (d.n_users, d.n_items, len(d.interactions["user"])) == (2, 2, 3)


def test_confidence_weights_grow_with_plays_and_average_one():
    c = confidence(np.array([1, 10, 100, 10000]))
    assert np.all(np.diff(c) > 0) and c.mean() == pytest.approx(1.0)
    assert c[-1] / c[0] < 14  # log1p: 10,000 plays is not 10,000x one play


@pytest.fixture(scope="module")
def lastfm_run(tmp_path_factory):
    from cases.video_recommendation import cli

    root = tmp_path_factory.mktemp("lastfm")
    write_lastfm(root / "data", n_users=300, n_artists=400)
    args = argparse.Namespace(
        preset="tiny",
        data=f"lastfm:{root / 'data'}",
        out=root / "run",
        seed=0,
        seq_epochs=None,
        tower_epochs=None,
        skip_loop=True,
    )
    return json.loads(cli.run(args).read_text()), root / "run"


def test_ordered_models_are_skipped_with_the_reason(lastfm_run):
    doc, run = lastfm_run
    table = doc["tables"]["retrieval"]
    assert doc["extra"]["protocol"] == "random_leave_one_out"
    for name in ("sasrec", "ease_recency", "recent_popularity"):
        assert name not in table and name in doc["extra"]["skipped_models"]
    report = (run / "report.md").read_text()
    assert "Seeded random leave-one-out" in report and "`sasrec` skipped" in report


def test_binary_and_log1p_weights_are_both_measured_and_ease_beats_popularity(lastfm_run):
    doc, _ = lastfm_run
    table = doc["tables"]["retrieval"]
    for name in ("item_knn", "item_knn_log1p", "ease", "ease_log1p"):
        assert name in table
    # The fixture's users like two taste clusters: item-item models must beat popularity.
    assert table["ease"]["ndcg@10"] > table["popularity"]["ndcg@10"] + 0.02
    # The shipped retriever is the best row on validation, and the served funnel starts with it.
    shipped = doc["extra"]["served_model"]["production_retriever"]
    val = {n: r["val_ndcg@10"] for n, r in table.items() if n != "served"}
    assert val[shipped] == max(val.values())
    assert doc["production_model"].startswith(shipped + "+")
    # Without a ranker the served lists follow the shipped retriever: close to its offline row.
    assert table["served"]["ndcg@10"] > table["popularity"]["ndcg@10"]


def test_lastfm_spec_through_load_data(tmp_path):
    d = load_data(f"lastfm:{write_lastfm(tmp_path / 'x')}", get_config("tiny"))
    assert not d.has_time and d.n_users == 120


def test_the_served_artifact_is_scored_and_promotion_compares_like_with_like(tmp_path):
    from cases.video_recommendation import cli

    data = write_lastfm(tmp_path / "data", n_users=300, n_artists=400)

    def run(seed):
        args = argparse.Namespace(
            preset="tiny",
            data=f"lastfm:{data}",
            out=tmp_path / "run",  # one registry for every run: tmp_path/run/registry
            seed=seed,
            seq_epochs=None,
            tower_epochs=None,
            skip_loop=True,
        )
        return json.loads(cli.run(args).read_text())["extra"]["registry"]

    first = run(0)
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    served = doc["tables"]["retrieval"]["served"]["ndcg@10"]
    record = tmp_path / "run" / "registry" / "versions" / "v0001.record.json"
    rec = json.loads(record.read_text())
    # The record holds the served artifact's NDCG@10 (not an offline row's), beating popularity.
    assert rec["metric"] == "ndcg@10" and rec["candidate"]["all"] == pytest.approx(served)
    assert rec["baseline"]["all"] == pytest.approx(
        doc["tables"]["retrieval"]["popularity"]["ndcg@10"]
    )
    assert first["promoted"] and first["champion_before"] is None
    # The same data again (same seed, same split): compared with the champion, and as good.
    again = run(0)
    assert again["compared_with_champion"] and again["promoted"]
    # Another seed holds out other items: other data, so not compared, only the baseline rule.
    other = run(1)
    assert not other["compared_with_champion"] and other["champion_before"] == "v0002"
    assert any("other data" in r for r in other["reasons"])
    # An unreadable champion is an error in the report, and nothing is promoted over it.
    champion = tmp_path / "run" / "registry" / "versions" / other["version"]
    (champion / "histories.json").write_text("{}")
    broken = run(1)
    assert broken["error"] and "unreadable" in broken["error"] and not broken["promoted"]
    assert "**Error:**" in (tmp_path / "run" / "report.md").read_text()
