"""Known-bad matching: text normalization, PDQ matching under edits, false matches, storage."""

import numpy as np
import pytest
import torch

from cases.content_moderation.hashbank import (
    DEFAULT_RADIUS,
    HashBank,
    Match,
    choose_radius,
    clopper_pearson,
    hamming,
    measure_matching,
    normalize_text,
    pdq_hash,
    text_hash,
)
from cases.content_moderation.images import EDIT_KINDS, edit_image, known_bad_bank, render_images
from shared.artifacts import load_artifact, save_artifact
from shared.errors import ArtifactError, DataError


@pytest.fixture(scope="module")
def bank_images():
    return known_bad_bank(8, seed=11)


@pytest.fixture(scope="module")
def bank(bank_images):
    b = HashBank()
    for i, img in enumerate(bank_images):
        b.add_image(img, f"kb-{i}")
    b.add_text("Fr33 crypt0 giveaway!!! DM me", "kb-text-0")
    return b


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  FR33   Crypt0!!! Ｇｉｖｅａｗａｙ  ", "free crypto giveaway"),  # leet, full-width
        ("fr\u200bee mon\u200dey", "free money"),  # zero-width characters
        ("ѕсаm аlеrt", "scam alert"),  # Cyrillic look-alikes
        ("Crème   brûlée.", "creme brulee"),  # accents
        ("won $100 in 2019", "won 100 in 2019"),  # numbers without letters stay numbers
        ("$cam @lert", "scam alert"),
        ("soooooo gooood", "soo good"),  # runs of 3+ collapse to 2
    ],
)
def test_normalize_text(raw, normalized):
    assert normalize_text(raw) == normalized


def test_text_matching(bank):
    assert bank.match_text("free CRYPTO giveaway... dm me") == Match("kb-text-0", 0, "text")
    assert bank.match_text("free crypto giveaway dm me now") is None
    assert bank.match_text("   !!! ") is None
    assert text_hash("A b") == text_hash("a  B!")
    with pytest.raises(DataError):
        bank.add_text("?!", "empty")
    with pytest.raises(DataError):
        normalize_text(b"bytes")


def test_exact_copies_match_at_distance_zero(bank, bank_images):
    m = bank.match_image(bank_images[3])
    assert m == Match("kb-3", 0, "image")


def test_a_large_upload_is_shrunk_before_hashing_and_still_matches(bank, bank_images):
    from PIL import Image

    big = np.asarray(Image.fromarray(bank_images[2]).resize((640, 512), Image.BICUBIC))
    m = bank.match_image(big)
    assert m is not None and m.item_id == "kb-2"


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edited_copies_match_their_source(bank, bank_images, kind):
    rng = np.random.default_rng(0)
    hits = [bank.match_image(edit_image(img, kind, rng)) for img in bank_images]
    found = [m is not None and m.item_id == f"kb-{i}" for i, m in enumerate(hits)]
    # A floor with room for a hard copy; the measured recall is in the case README.
    assert sum(found) >= 7, f"{kind}: {sum(found)}/8 matched"
    assert all(m.distance <= DEFAULT_RADIUS for m in hits if m is not None)


def test_no_false_matches_on_benign_images(bank):
    benign, _, meta = render_images(150, seed=12, size=128, violating_share=0.0)
    assert "emblem" not in set(meta["family"])  # decoys (emblem parts) included
    assert all(bank.match_image(img) is None for img in benign)


def test_flat_images_are_neither_added_nor_matched(bank):
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert pdq_hash(flat)[1] < 50
    assert bank.match_image(flat) is None
    with pytest.raises(DataError, match="quality"):
        HashBank().add_image(flat, "flat")


def test_hamming_against_a_hand_count():
    a = np.zeros((1, 32), dtype=np.uint8)
    b = np.zeros((2, 32), dtype=np.uint8)
    b[0, 0] = 0b1011  # 3 bits
    b[1, :] = 0xFF  # 256 bits
    assert hamming(a, b).tolist() == [[3, 256]]


def test_arrays_round_trip_through_an_artifact(bank, bank_images, tmp_path):
    arrays = bank.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    assert bank.n_images == 8 and bank.n_image_hashes == 8 * 16  # crop variants
    tensors = {f"hashbank.{k}": torch.from_numpy(v) for k, v in arrays.items()}
    save_artifact(tmp_path / "a", tensors, {}, {}, "fp")
    loaded = load_artifact(tmp_path / "a").tensors
    again = HashBank.from_arrays({k.split(".", 1)[1]: v for k, v in loaded.items()})
    assert (again.radius, again.min_quality, again.crop) == (bank.radius, bank.min_quality, 0.03)
    assert again.match_image(bank_images[5]) == Match("kb-5", 0, "image")
    assert again.match_text("FREE crypto giveaway dm me") == Match("kb-text-0", 0, "text")


def test_from_arrays_refuses_inconsistent_arrays(bank):
    arrays = bank.to_arrays()
    with pytest.raises(ArtifactError, match="lack"):
        HashBank.from_arrays({k: v for k, v in arrays.items() if k != "text_ids"})
    bad = dict(arrays, image_id_offsets=arrays["image_id_offsets"][:-1])
    with pytest.raises(ArtifactError, match="ids"):
        HashBank.from_arrays(bad)
    bad = dict(arrays, image_hashes=arrays["image_hashes"][:, :16])
    with pytest.raises(ArtifactError, match="shapes"):
        HashBank.from_arrays(bad)


def test_measure_matching_structure_and_sweep(bank_images):
    benign, _, _ = render_images(40, seed=13, size=128, violating_share=0.0)
    r = measure_matching(bank_images[:4], benign, np.random.default_rng(0), radius=None)
    assert set(r["recall"]) == set(EDIT_KINDS) | {"all"}
    assert r["n_bank"] == 4 and r["n_benign"] == 20  # radius chosen on the other 20
    assert 0 <= r["radius"] <= 96
    recalls = [p["recall"] for p in r["sweep"]]
    fmrs = [p["false_match_rate"] for p in r["sweep"]]
    assert recalls == sorted(recalls) and fmrs == sorted(fmrs)  # both grow with the radius
    assert r["sweep"][-1]["recall"] == 1.0
    lo, hi = r["false_match_ci"]
    assert lo <= r["false_match_rate"] <= hi


def test_choose_radius_and_interval():
    sweep = [
        {"radius": 10, "recall": 0.5, "false_match_rate": 0.0},
        {"radius": 20, "recall": 0.96, "false_match_rate": 0.0},
        {"radius": 30, "recall": 0.99, "false_match_rate": 0.0005},
        {"radius": 40, "recall": 1.0, "false_match_rate": 0.01},
    ]
    assert choose_radius(sweep) == 20  # the tightest radius reaching 95% recall
    assert choose_radius(sweep, target_recall=0.999) == 30  # best recall within the rate cap
    assert choose_radius(sweep, max_false_match_rate=-1) == 0
    sweep[1]["recall_min_kind"] = 0.9  # one edit kind still below 95% at radius 20
    sweep[2]["recall_min_kind"] = 0.97
    assert choose_radius(sweep) == 30
    lo, hi = clopper_pearson(0, 5000)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 5000))  # about 7.4e-4
