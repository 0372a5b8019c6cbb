"""The keyboard's side of the golden-set / monitor contract (shared.golden), without Ray: its
artifact ships both files, the served model reproduces its golden scores, a shuffled copy is
refused, and the monitor sees the keystrokes' features."""

import pytest

from cases.mobile_keyboard.predictor import KeyboardPredictor
from cases.mobile_keyboard.serve import LOADER, SuggestRequest
from cases.mobile_keyboard.train import keystroke_requests
from shared.errors import ArtifactError
from shared.golden import check_golden, read_golden, shuffle_weights
from shared.serving import ReloadableModel


@pytest.fixture(scope="module")
def artifact(keyboard_trigram):
    return keyboard_trigram


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
