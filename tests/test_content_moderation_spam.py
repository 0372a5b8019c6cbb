"""The `sms-spam:` path on a fixture in the SMS Spam Collection's format (`ham|spam<TAB>text`,
13% spam, texting shorthand, prize/premium-rate spam with "FREE", "txt", "£", short codes,
phone numbers and URLs). The real collection is not on this machine: these tests check that
the loader and the TF-IDF model keep the signals SMS spam is caught by, not the published
figure (spam F1 ~0.93-0.96 for TF-IDF + linear models), which needs the real file.
"""

import numpy as np

from cases.content_moderation.config import get_config
from cases.content_moderation.data import load_source
from cases.content_moderation.model import ModerationTfidf
from cases.content_moderation.train import fit_text_models

CFG = get_config("tiny", encoder=False, augment_identity=False)

# Spam and ham are composed from fragments (opening, offer, action, small print), so messages
# share words across campaigns as real ones do; the split keeps near-duplicates on one side, so
# whole templates would never be seen in training (the real collection has many campaigns).
_SPAM_OPEN = [
    "URGENT!",
    "FREE entry!",
    "Congratulations!",
    "PRIVATE!",
    "WINNER!!",
    "Dear customer,",
    "Had your mobile 11 months or more?",
    "SIX chances to win CASH!",
    "",
]
_SPAM_OFFER = [
    "Your mobile number has been awarded a £{n} prize GUARANTEED.",
    "U have won a {n} cash award or a 4* holiday.",
    "ur entitled to update to the latest colour camera mobile for FREE.",
    "You have been selected to receive a £{n} bonus.",
    "Your {year} account statement shows {n} unredeemed points.",
    "Get the latest ringtone FREE.",
    "Enter our weekly draw to win £{n} in vouchers.",
    "You have a new voicemail waiting.",
    "Hot singles in your area want to chat.",
]
_SPAM_ACTION = [
    "Call 0{tel} now",
    "Txt WIN to {code}",
    "Reply YES to {code}",
    "To claim txt GO to {code}",
    "Visit www.{site}.co.uk",
    "Call 0{tel} from a landline",
    "Claim at http://{site}.com/c",
]
_SPAM_SMALL = [
    "T&Cs apply 18+",
    "150p/msg",
    "£1.50/min",
    "stop txt STOP",
    "Valid 12hrs only",
    "16+",
    "£3/wk to opt out",
    "",
]
_HAM_A = [
    "Ok lar...",
    "Sorry,",
    "Hey!",
    "Haha ok",
    "K.",
    "Good morning!",
    "Mum says hi.",
    "lol",
    "Nah,",
    "Just finished work,",
    "Oh no",
    "Yeah",
    "",
]
_HAM_B = [
    "i'll see u at {hour} then",
    "I'll call later",
    "are you free tonight?",
    "wanna grab dinner?",
    "did you get the {n} quid I sent for the tickets?",
    "my number changed to 0{tel}",
    "text me when you're at the station",
    "train gets in at {hour}",
    "won't be there till {hour}",
    "can you pick up milk on the way?",
    "did u win the match?",
    "free for lunch tmrw? my treat",
    "sent the link for the photos: http://photos.{site}.com/album",
    "call her later ok",
    "I'll be there in {n} mins",
    "he lives around here though",
    "so tired today",
    "I c u then",
    "don't forget ur keys",
    "the prize draw at work was rigged lol",
]
_HAM_C = ["", ":)", "x", "Wait for me", "Love you", "see you soon", "dont be late", ":( "]


def _pick(rng, xs):
    return xs[int(rng.integers(len(xs)))]


def write_sms_fixture(path, n: int = 900, seed: int = 0) -> None:
    """n lines, 13% spam (the collection's share), composed from fragments, fresh numbers."""
    rng = np.random.default_rng(seed)
    sites = ["bigprize", "txt4win", "mobclub", "freetones", "mates", "ringz"]
    lines = []
    for _ in range(n):
        spam = rng.random() < 0.13
        if spam:
            parts = [
                _pick(rng, _SPAM_OPEN),
                _pick(rng, _SPAM_OFFER),
                _pick(rng, _SPAM_ACTION),
                _pick(rng, _SPAM_SMALL),
            ]
        else:
            parts = [_pick(rng, _HAM_A), _pick(rng, _HAM_B), _pick(rng, _HAM_C)]
        text = " ".join(p for p in parts if p).format(
            n=int(rng.choice([100, 250, 500, 1000, 2000, 5000, 3])),
            code=int(rng.integers(80000, 89999)),
            tel=int(rng.integers(8_000_000_000, 9_099_999_999)),
            site=_pick(rng, sites),
            year=int(rng.integers(2003, 2006)),
            hour=f"{int(rng.integers(1, 12))}",
        )
        lines.append(("spam" if spam else "ham") + "\t" + text)
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def test_latin1_copy_keeps_the_pound_sign(tmp_path):
    p = tmp_path / "SMSSpamCollection"
    write_sms_fixture(p, n=200)
    p.write_bytes(p.read_bytes().decode("utf-8").encode("latin-1"))  # "£" as the byte 0xA3
    d = load_source(f"sms-spam:{p}", CFG, seed=0)
    assert d.policies == ("spam",)
    assert any("£" in t for t, y in zip(d.texts, d.labels[:, 0], strict=True) if y == 1)


def test_tfidf_features_keep_pound_digits_and_short_codes():
    m = ModerationTfidf(1000, 5000, 1, 1.0).fit(
        ["win £500 txt 87121 now", "ok see u at 5", "FREE £100 call 09061701461"] * 2,
        np.array([[1], [0], [1]] * 2),
    )
    chars = m.vec_c_.vocabulary_
    words = m.vec_w_.vocabulary_
    assert "£5" in chars and "£1" in chars  # the currency survives tokenization
    assert "871" in chars and "0906" in chars  # short codes and premium-rate prefixes
    assert "txt" in words and "87121" in words and "free" in words


def test_spam_model_on_sms_fixture(tmp_path):
    """End to end on the SMS-format fixture: loader, stratified split, TF-IDF + LR, spam-class
    F1 at its validation threshold. Generated templates are easier than the real collection,
    so the floor is loose; what it catches is a pipeline that loses the spam signals."""
    from sklearn.metrics import f1_score

    p = tmp_path / "SMSSpamCollection"
    write_sms_fixture(p, n=900, seed=1)
    data = load_source(f"sms-spam:{p}", CFG, seed=0)
    fit = fit_text_models(CFG, data, 0, tmp_path, log=lambda s: None)
    _, y_te = data.subset("test")
    s = fit["scores"]["tfidf_lr"]["test"][:, 0]
    th = fit["thresholds"]["tfidf_lr"]["spam"]
    assert set(th) >= {"flag", "flag_f1", "remove", "review"}
    f1 = f1_score(y_te[:, 0], s >= th["flag_f1"])
    assert y_te[:, 0].sum() >= 10 and f1 >= 0.9, f1
    rules = fit["scores"]["rules"]["test"][:, 0]
    th_r = fit["thresholds"]["rules"]["spam"]["flag_f1"]
    assert f1 > f1_score(y_te[:, 0], rules >= th_r)  # the model beats the blocklist on SMS
