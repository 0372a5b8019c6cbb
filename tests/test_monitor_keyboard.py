"""The keyboard's side of the golden-set / monitor contract (shared.golden), without Ray: its
artifact ships both files, the served model reproduces its golden scores, a shuffled copy is
refused, and the monitor sees the keystrokes' features."""

import pytest

from cases.mobile_keyboard.baseline import KeyboardKneserNey
from cases.mobile_keyboard.data import builtin_corpus
from cases.mobile_keyboard.model import KeyboardVocab
from cases.mobile_keyboard.predictor import TRIGRAM, KeyboardPredictor
from cases.mobile_keyboard.serve import LOADER, SuggestRequest
from cases.mobile_keyboard.train import finish_keyboard_artifact, keystroke_requests
from shared.artifacts import save_artifact
from shared.errors import ArtifactError
from shared.golden import check_golden, read_golden, shuffle_weights
from shared.serving import ReloadableModel


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    corpus = builtin_corpus(1500, seed=2)
    vocab = KeyboardVocab.build(corpus.train, 400)
    kn = KeyboardKneserNey(vocab).fit(corpus.train)
    cfg = {"embed_dim": 8, "hidden_dim": 16, "num_layers": 1, "shipped": "kn_full"}
    files = {"vocab.json": vocab.to_json().encode(), TRIGRAM: kn.full_.to_bytes()}
    root = tmp_path_factory.mktemp("mk")
    art = save_artifact(root / "artifact", {}, cfg, {}, "test", files)
    return finish_keyboard_artifact(art, corpus.val, seed=0), corpus


def test_keystroke_requests_are_valid_requests(artifact):
    _, corpus = artifact
    reqs = keystroke_requests(corpus.val, 300, seed=1)
    assert len(reqs) == 300
    for r in reqs:
        SuggestRequest.model_validate(r)  # what a client may send: the drift drill replays them


def test_the_artifact_reproduces_its_golden_set_and_a_shuffled_copy_does_not(artifact, tmp_path):
    import shutil

    art, _ = artifact
    assert LOADER == KeyboardPredictor.load
    assert len(read_golden(art)["requests"]) == 200
    assert check_golden(LOADER(art), art).startswith("golden set: 200 scores reproduced")
    bad = tmp_path / "bad"
    shutil.copytree(art, bad)
    assert any(line.startswith("trigram.safetensors") for line in shuffle_weights(bad))
    with pytest.raises(ArtifactError, match="golden set"):
        check_golden(LOADER(bad), bad)


def test_served_model_feeds_the_monitor(artifact):
    art, _ = artifact
    m = ReloadableModel(art, KeyboardPredictor.load, monitor="mobile-keyboard")
    assert m.golden.startswith("golden set: 200") and m.monitor is not None
    reqs = read_golden(art)["requests"]
    for i in range(0, 200, 8):
        batch = reqs[i : i + 8]
        m.observe(batch, m.get().suggest_batch(batch))
    m.monitor.check()  # the verdict is otherwise refreshed every check_every observations
    status = m.monitor_status()
    assert status["enabled"] and status["n"] == 200 and status["ready"]
    assert set(status["features"]) == {
        "context_words",
        "oov_share",
        "prefix_chars",
        "context_chars",
    }
    assert status["alarms"] == {}  # its own golden keystrokes are normal traffic
