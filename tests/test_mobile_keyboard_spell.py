"""Spell check: error model, candidate keys, corrector, user dictionary, misspelling loaders."""

import numpy as np
import pytest

from cases.mobile_keyboard.data import generated_spell_pairs, keyboard_misspell, load_spell_pairs
from cases.mobile_keyboard.spell import (
    KeyboardErrorModel,
    KeyboardSpellCorrector,
    align,
    skeleton_key,
    sound_key,
)
from shared.errors import DataError

WORDS = (
    "the receive spelling believe address separate because people their there which would "
    "about beautiful definitely necessary accommodation phone station tomorrow really"
).split()
# A tiny frequency dictionary (counts are made up but ordered like real English).
FREQ = {w: 10_000 - 300 * i for i, w in enumerate(WORDS)} | {"ten": 500, "tea": 400, "dress": 300}


@pytest.fixture(scope="module")
def error_model():
    # Generated keyboard noise over a few hundred words is enough for the hand checks.
    vocab = WORDS * 20 + ["other", "letter", "running", "happen", "little", "coffee"] * 20
    return KeyboardErrorModel().fit(generated_spell_pairs(vocab, seed=3, per_word=2))


@pytest.fixture()
def corrector(error_model):
    return KeyboardSpellCorrector(error_model, frequencies=dict(FREQ))


def test_align_finds_the_edit():
    assert align("teh", "the") == [("trans", "t", "he", "eh")]  # (op, left context, from, to)
    assert [op for op, *_ in align("adress", "address")] == ["del"]
    assert [op for op, *_ in align("speling", "spelling")] == ["del"]
    assert [op for op, *_ in align("recieve", "receive")] == ["trans"]


def test_keys_reach_past_two_edits():
    assert skeleton_key("accommodation") == skeleton_key("acomodation")
    assert skeleton_key("separate") == skeleton_key("seperate") == "sprt"
    assert sound_key("phone") == sound_key("fone")
    assert sound_key("station") == sound_key("stashun")


def test_near_sound_keys_reach_a_word_three_edits_away(error_model):
    from cases.mobile_keyboard.spell import _near_keys

    # 'incristing' (a real Birkbeck misspelling) is three edits from 'increasing' and on neither
    # its skeleton nor its sound key, but one consonant from the sound key.
    typo, word = "incristing", "increasing"
    assert sound_key(typo) != sound_key(word) and skeleton_key(typo) != skeleton_key(word)
    assert _near_keys(sound_key(typo)) & _near_keys(sound_key(word))
    c = KeyboardSpellCorrector(error_model, frequencies=dict(FREQ) | {word: 2_000})
    assert word in c.candidates(typo)
    assert c.correct(typo, 1) == [word]
    # A typo one edit from a word does not pay for the wider lookup.
    assert c.candidates("teh") == [w for w in c.candidates("teh") if len(w) <= 4]


def test_error_model_costs_are_sane(error_model):
    em = error_model
    assert em.cost("the", "the") == 0.0
    # A dropped double letter is cheaper than dropping an arbitrary letter.
    assert em.cost("adress", "address") < em.cost("adress", "addressx")
    # A transposition is cheaper than two unrelated substitutions.
    assert em.cost("teh", "the") < em.cost("tqz", "the")
    # A neighbouring key (s next to a) is cheaper than a far one (p).
    assert em.c_sub("a", "s") < em.c_sub("a", "p")
    # The model survives a JSON round trip unchanged.
    em2 = KeyboardErrorModel.from_json(em.to_json())
    assert em2.cost("recieve", "receive") == pytest.approx(em.cost("recieve", "receive"))


@pytest.mark.parametrize(
    "typo, correct",
    [("teh", "the"), ("recieve", "receive"), ("speling", "spelling"), ("seperate", "separate"),
     ("definately", "definitely"), ("acomodation", "accommodation"), ("fone", "phone")],
)  # fmt: skip
def test_corrector_hand_checked(corrector, typo, correct):
    assert corrector.correct(typo, 1) == [correct]


def test_known_word_is_kept_and_context_can_rerank(corrector):
    assert corrector.correct("their", 1) == ["their"]
    # With a context that strongly wants "there", the LM term wins over the prior.
    ranked = corrector.rank(
        "thier", 2, context_logprob=lambda c: [0.0 if w == "there" else -20.0 for w in c]
    )
    assert ranked[0][0] == "there"


def test_user_dictionary_is_never_corrected(corrector):
    assert "quentin" not in corrector.freq
    corrector.learn_user_word("Quentin")
    assert corrector.correct("quentin", 3) == ["quentin"]
    # ...and it becomes a candidate for the user's own typos.
    assert corrector.correct("quentn", 1) == ["quentin"]


def test_keyboard_noise_is_deterministic_and_plausible():
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    a = [keyboard_misspell(w, rng1) for w in WORDS]
    b = [keyboard_misspell(w, rng2) for w in WORDS]
    assert a == b
    assert sum(x != w for x, w in zip(a, WORDS, strict=True)) >= len(WORDS) - 2
    assert all(abs(len(x) - len(w)) <= 4 for x, w in zip(a, WORDS, strict=True))


def test_loaders_both_layouts(tmp_path):
    tsv = tmp_path / "set1.tsv"
    tsv.write_text("misspelling\tcorrect\nacess\taccess\n\nadres\taddress\n")
    assert load_spell_pairs(f"tsv:{tsv}") == ("set1", [("acess", "access"), ("adres", "address")])
    bb = tmp_path / "missp.dat"
    bb.write_text("$Access\nacess\naccess\n$address\nadres\n")
    stem, pairs = load_spell_pairs(f"birkbeck:{bb}")
    assert stem == "missp" and pairs == [
        ("acess", "access"),
        ("access", "access"),
        ("adres", "address"),
    ]
    nv = tmp_path / "errors.txt"
    nv.write_text("four: forer, fore*5\nyellow: yello\n")
    assert load_spell_pairs(f"norvig:{nv}")[1] == [
        ("forer", "four"),
        ("fore", "four"),
        ("yello", "yellow"),
    ]


@pytest.mark.parametrize(
    "fmt, text",
    [("tsv", "misspelling\tcorrect\nonly-one-column\n"), ("tsv", "\n  \n"),
     ("birkbeck", "acess\n$access\n"), ("birkbeck", "$access\ntwo words\n"),
     ("norvig", "no colon here\n")],
)  # fmt: skip
def test_loaders_refuse_a_file_with_no_pair(tmp_path, fmt, text):
    """A bad line is skipped (tests/test_mobile_keyboard_ingest.py); a file with no pair left
    at all is a DataError."""
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(DataError):
        load_spell_pairs(f"{fmt}:{p}")


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="FORMAT:PATH"):
        load_spell_pairs("nofile")
    with pytest.raises(DataError, match="does not exist"):
        load_spell_pairs(f"tsv:{tmp_path / 'missing.tsv'}")
    with pytest.raises(DataError, match="unknown misspelling format"):
        load_spell_pairs(f"csv:{tmp_path}")
