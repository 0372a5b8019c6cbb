"""The image side: rendered data, edits, safe decoding of untrusted bytes, the CNN and its ONNX."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cases.content_moderation.images import (
    EDIT_KINDS,
    ModerationImageCNN,
    decode_image,
    edit_image,
    export_image_onnx,
    known_bad_bank,
    preprocess,
    render_images,
    score_images,
    train_image_model,
)
from shared.classification import roc_auc
from shared.errors import DataError
from shared.onnx_utils import make_session


def _encode(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height RGB pixels (a decompression bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_render_images_is_deterministic_with_both_classes_and_little_noise():
    a, ya, meta = render_images(120, seed=3)
    b, yb, _ = render_images(120, seed=3)
    assert a.shape == (120, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert 0.1 < ya.mean() < 0.45
    assert meta["flipped"].mean() < 0.08
    assert np.array_equal(ya != meta["clean_label"], meta["flipped"])
    assert set(meta["family"][meta["clean_label"] == 1]) == {"emblem"}
    c, _, _ = render_images(5, seed=4, size=96, violating_share=0.0, label_noise=0.0)
    assert c.shape == (5, 96, 96, 3)
    bank = known_bad_bank(4, seed=0)
    assert bank.shape == (4, 128, 128, 3)
    assert not np.array_equal(bank[0], bank[1])


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edit_image_kinds(kind):
    img = known_bad_bank(1, seed=1)[0]
    out = edit_image(img, kind, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert not np.array_equal(out, img) or out.shape != img.shape
    if kind == "crop":
        h, w = out.shape[:2]
        assert 0.93 * 128 <= h < 128 and 0.93 * 128 <= w < 128  # 2-6% of each side removed


def test_edit_image_unknown_kind():
    with pytest.raises(ValueError, match="unknown edit kind"):
        edit_image(known_bad_bank(1, 0)[0], "rotate", np.random.default_rng(0))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decode_image_reads_the_allowed_formats(fmt):
    img = known_bad_bank(1, seed=2)[0]
    out = decode_image(_encode(img, fmt))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    if fmt in ("PNG", "BMP"):
        assert np.array_equal(out, img)


def test_decode_image_composites_transparency_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    out = decode_image(_encode(rgba, "PNG"))
    assert out.shape == (8, 8, 3) and (out == 255).all()


def test_decode_image_scales_16_bit_grey():
    grey16 = np.full((6, 5), 40_000, dtype=np.uint16)  # 61% of full scale
    out = decode_image(_encode(grey16, "PNG"))
    assert out.shape == (6, 5, 3) and (out == 40_000 >> 8).all()


def test_decode_image_refuses_bad_input():
    png = _encode(known_bad_bank(1, seed=2)[0], "PNG")
    jpeg = _encode(known_bad_bank(1, seed=2)[0], "JPEG", quality=90)
    with pytest.raises(DataError, match="not an image"):
        decode_image(b"GIF89 but not really, just text" * 4)
    with pytest.raises(DataError, match="truncated or corrupt"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(DataError, match="over the limit of 1,000 bytes"):
        decode_image(png, max_bytes=1_000)
    with pytest.raises(DataError, match="empty"):
        decode_image(b"")
    with pytest.raises(DataError, match="must be bytes"):
        decode_image("iVBORw0KGgo=")


def test_decode_image_refuses_bombs_before_decoding():
    # Our limit: the header says 3000 x 3000; refused from the header, pixels never decoded.
    bomb = _png_declaring(3000, 3000)
    assert len(bomb) < 200
    with pytest.raises(DataError, match="decompression bomb guard"):
        decode_image(bomb, max_pixels=1_000_000)
    # Pillow's own guard (over twice Image.MAX_IMAGE_PIXELS) fires inside Image.open.
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(_png_declaring(50_000, 50_000), max_pixels=10**12)
    # Between Pillow's warning and error levels: the warning is turned into a refusal.
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(_png_declaring(10_000, 10_000), max_pixels=10**12)


def test_preprocess_shape_range_and_resize():
    img = known_bad_bank(1, seed=0)[0]  # 128 x 128
    x = preprocess(img)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    small = render_images(1, seed=0)[0][0]
    assert np.allclose(preprocess(small), small.transpose(2, 0, 1) / 255.0)
    with pytest.raises(DataError):
        preprocess(np.zeros((4, 4), dtype=np.uint8))


def test_cnn_overfits_a_small_batch():
    x, y, _ = render_images(48, seed=5, violating_share=0.5, label_noise=0.0)
    model = train_image_model(x, y, epochs=20, seed=0, time_cap_s=120, batch_size=16, width=8,
                              min_steps=0, progress=False)  # fmt: skip
    assert len(model.history) == 20  # no validation set: no early stop
    assert model.history[-1]["loss"] < model.history[0]["loss"]
    assert roc_auc(y, score_images(model, x)) >= 0.98


def test_min_steps_extends_a_short_run():
    x, y, _ = render_images(16, seed=6, violating_share=0.5, label_noise=0.0)
    lines: list[str] = []
    model = train_image_model(x, y, epochs=1, seed=0, time_cap_s=60, batch_size=8, width=4,
                              min_steps=6, progress=lines.append)  # fmt: skip
    assert len(model.history) == 3  # 2 steps an epoch, at least 6 steps
    assert len(lines) == 3 and lines[-1].startswith("image cnn epoch 3/3: loss")


def test_train_image_model_needs_both_classes():
    x, _, _ = render_images(8, seed=0)
    with pytest.raises(DataError, match="both"):
        train_image_model(x, np.zeros(8), epochs=1, seed=0, time_cap_s=5, progress=False)


def test_onnx_parity_and_one_scoring_path(tmp_path):
    model = ModerationImageCNN(width=8)
    model.eval()
    path, max_diff = export_image_onnx(model, tmp_path / "image.onnx")
    assert path.is_file() and max_diff < 1e-4
    session = make_session(path)
    # The same requests through both paths, at two sizes (preprocess resizes 128 -> 64).
    requests = list(render_images(3, seed=1)[0]) + list(known_bad_bank(2, seed=1))
    p_torch = score_images(model, requests)
    p_onnx = score_images(session, requests)
    assert p_onnx.shape == (5,)
    assert np.allclose(p_torch, p_onnx, atol=1e-5)
    assert score_images(session, []).shape == (0,)


def test_request_limits_have_one_definition():
    """serve.py and images.py enforce the config's limits, not limits of their own."""
    from cases.content_moderation import images, serve
    from cases.content_moderation.config import REQUEST_LIMITS, ModerationConfig

    fields = (REQUEST_LIMITS.max_text_chars, REQUEST_LIMITS.max_image_bytes)
    assert (serve.MAX_TEXT_CHARS, serve.MAX_IMAGE_BYTES) == fields
    assert serve.MAX_IMAGE_PIXELS == images.MAX_IMAGE_PIXELS == REQUEST_LIMITS.max_image_pixels
    assert images.MAX_IMAGE_BYTES == REQUEST_LIMITS.max_image_bytes
    assert REQUEST_LIMITS == ModerationConfig()  # the default's, whatever the preset
    # decode_image's default refuses an upload just over the limit before decoding it
    with pytest.raises(DataError, match="bytes"):
        images.decode_image(b"\x89PNG" + b"\0" * REQUEST_LIMITS.max_image_bytes)
