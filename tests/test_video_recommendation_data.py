"""Video recommendation: the simulator's invariants, the real-data loaders, the data gate."""

import numpy as np
import pytest

from cases.video_recommendation.config import get_config
from cases.video_recommendation.data import (
    CORRUPTIONS,
    VideoRecSimulator,
    corrupt_batch,
    impression_schema,
    load_data,
    load_interactions,
    load_lastfm,
    load_movielens,
    make_builtin,
    split_batches,
)
from shared.errors import DataError


@pytest.fixture(scope="module")
def tiny():
    return make_builtin(get_config("tiny"), seed=0)


def test_logging_policy_rows_sum_to_one():
    sim = VideoRecSimulator(get_config("tiny"), seed=1)
    users = np.arange(20)
    p = sim.logging_probs(users, day=5.0)
    assert p.shape == (20, sim.n_items)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    assert np.all(p[:, sim.item_upload_day > 5.0] == 0)  # nothing shown before its upload


def test_impressions_are_well_formed(tiny):
    imp = tiny.impressions
    cfg = get_config("tiny")
    assert np.all((imp["watch_frac"] >= 0) & (imp["watch_frac"] <= 1))
    assert np.all(imp["watch_frac"][imp["click"] == 0] == 0)
    assert np.all(imp["satisfied"] <= imp["click"])
    assert np.all((imp["propensity"] > 0) & (imp["propensity"] <= 1))
    sess, counts = np.unique(imp["session"], return_counts=True)
    assert np.all(counts == cfg.slate_size)
    # a slate never repeats a video
    for s in sess[:20]:
        items = imp["item"][imp["session"] == s]
        assert len(set(items.tolist())) == len(items)


def test_position_bias_lowers_clicks_at_lower_slots():
    cfg = get_config("tiny")
    sim = VideoRecSimulator(cfg, seed=2)
    rng = np.random.default_rng(0)
    users = rng.integers(0, sim.n_users, 4000)
    slate = np.tile(rng.permutation(sim.n_items)[: cfg.slate_size], (4000, 1))
    same = np.tile(slate[:, :1], (1, cfg.slate_size))  # the same video in every slot
    out = sim.sample_outcomes(users, same, 10.0, rng)
    ctr = out["click"].mean(0)
    assert ctr[0] > ctr[3] > ctr[-1]


def test_simulator_is_deterministic_by_seed():
    cfg = get_config("tiny")
    a, b, c = make_builtin(cfg, 3), make_builtin(cfg, 3), make_builtin(cfg, 4)
    for col in ("user", "item", "click", "watch_frac"):
        np.testing.assert_array_equal(a.impressions[col], b.impressions[col])
    assert not np.array_equal(a.impressions["item"], c.impressions["item"])


def test_cohorts_exist_and_heavy_users_watch_more(tiny):
    sim = tiny.simulator
    counts = np.bincount(tiny.interactions["user"], minlength=sim.n_users)
    assert set(np.unique(sim.user_cohort)) == {"new", "casual", "heavy"}
    assert counts[sim.user_cohort == "heavy"].mean() > counts[sim.user_cohort == "new"].mean()


# --- loaders -------------------------------------------------------------------------------


def _check(d, n_users, n_items, n_rows):
    assert (d.n_users, d.n_items) == (n_users, n_items)
    assert len(d.interactions["user"]) == n_rows
    for col in ("user", "item", "timestamp", "weight"):
        assert col in d.interactions
    u, t = d.interactions["user"], d.interactions["timestamp"]
    assert np.all(np.diff(u) >= 0)  # grouped by user, time-ordered inside
    for x in np.unique(u):
        assert np.all(np.diff(t[u == x]) >= 0)


def test_movielens_latest_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,30\n1,20,3.5,10\n2,10,5.0,5\n2,30,1.0,7\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,A,Drama|War\n20,"B, the",Comedy\n30,C,Drama\n'
    )
    d = load_movielens(tmp_path)
    _check(d, 2, 3, 4)
    assert d.interactions["item"][0] == 1  # user 1's first watch (t=10) is movie 20
    assert d.item_topic[0] == d.item_topic[2]  # both Drama
    assert d.interactions["weight"].max() == pytest.approx(1.0)


def test_movielens_1m_dat(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::5::3::100\n1::6::4::50\n2::5::5::70\n")
    _check(load_movielens(tmp_path), 2, 2, 3)


def test_movielens_100k_udata(tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    _check(load_movielens(tmp_path), 2, 2, 2)


def test_interactions_csv_with_and_without_header(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("user,item,timestamp,weight\nu1,v1,5,1.0\nu1,v2,3,2.0\nu2,v1,1,0.5\n")
    d = load_interactions(f)
    _check(d, 2, 2, 3)
    assert list(d.user_ids) == ["u1", "u2"]
    g = tmp_path / "b.csv"
    g.write_text("1,7,5\n1,8,6\n")
    _check(load_interactions(g), 1, 2, 2)


def test_lastfm(tmp_path):
    (tmp_path / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t5\n"
    )
    d = load_lastfm(tmp_path)
    _check(d, 2, 2, 3)
    assert not d.has_time and any("no timestamps" in n for n in d.notes)
    assert d.interactions["weight"].max() == 13883  # play counts as they are


@pytest.mark.parametrize(
    "spec, content",
    [
        ("movielens:{d}", None),
        ("interactions:{d}/bad.csv", "1,2\n"),  # valid user,item, but too little data
        ("interactions:{d}/bad.csv", "1\n2\n"),
        ("interactions:{d}/bad.csv", "1,2,notatime\n3,4,x\n"),
        ("unknown:{d}", None),
        ("movielens", None),
    ],
)
def test_malformed_input_is_a_data_error(tmp_path, spec, content):
    if content is not None:
        (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError):
        load_data(spec.format(d=tmp_path), get_config("tiny"))


# --- the data gate ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_gate_quarantines_a_corrupted_batch(tiny, tmp_path, kind):
    from shared.gate import build_reference, check_batch, quarantine

    schema = impression_schema(get_config("tiny").slate_size)
    batches = split_batches(tiny.impressions)
    ref = build_reference(batches[0], schema)
    assert check_batch(batches[1], schema, ref).passed
    bad = corrupt_batch(batches[1], kind)
    res = check_batch(bad, schema, ref)
    assert not res.passed
    path = quarantine(bad, res, tmp_path)
    assert path.exists()


def _log_csv(path, rng, flood_window: int | None = None, ratings: bool = True):
    """A user,item,timestamp,weight log of 4,000 rows over 10 equal time windows; with
    `flood_window`, one item takes half of that window's rows (a bot replaying one video)."""
    rows = []
    for t in range(4000):
        item = int(rng.integers(0, 2000))
        if flood_window is not None and t // 400 == flood_window and t % 2 == 0:
            item = 7
        w = rng.integers(1, 11) / 10 if ratings else rng.integers(1, 500)
        rows.append(f"{rng.integers(0, 300)},{item},{t},{w}")
    path.write_text("user,item,timestamp,weight\n" + "\n".join(rows) + "\n")
    return path


def test_real_data_gate_refuses_the_flooded_window_and_trains_on_the_rest(tmp_path):
    from cases.video_recommendation.data import gate_interactions

    rng = np.random.default_rng(0)
    clean = load_interactions(_log_csv(tmp_path / "clean.csv", rng))
    n = clean.interactions["user"].size
    clean, gate = gate_interactions(clean, tmp_path / "q0")
    assert gate["rows"]["time windows"]["quarantined"] == 0
    assert clean.interactions["user"].size == n  # nothing dropped from a clean log

    flooded = load_interactions(_log_csv(tmp_path / "bot.csv", rng, flood_window=6))
    kept, gate = gate_interactions(flooded, tmp_path / "q1")
    assert gate["rows"]["time windows"]["quarantined"] == 1
    assert "value '7'" in gate["failures"][0]  # the gate names the flooding item
    assert list((tmp_path / "q1").iterdir())  # the refused window is kept aside for a person
    ts = kept.interactions["timestamp"]
    assert not np.any((ts >= 2400) & (ts < 2800))  # the flooded window is not trained on


def test_real_data_gate_stops_with_one_line_when_most_batches_fail(tmp_path):
    from cases.video_recommendation.data import gate_interactions

    data = load_interactions(_log_csv(tmp_path / "a.csv", np.random.default_rng(1)))
    w = data.interactions["weight"]
    w[: int(0.7 * w.size)] = 2.0  # ratings scaled to [0, 1]: 70% of the log out of range
    data.interactions["timestamp"] = np.arange(w.size)  # time order = these rows first
    with pytest.raises(DataError, match="refused .* of 10 batches"):
        gate_interactions(data, tmp_path / "q")
