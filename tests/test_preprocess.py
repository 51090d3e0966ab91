"""Image preprocessing: safe loading, foreground from alpha / rembg / built-in segmentation, framing on white."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vat.errors import VatError
from vat.preprocess import (
    _rembg_model_paths,
    _rembg_session,
    find_rembg_model,
    load_image,
    preprocess_image,
    segment_plain_background,
)


def disc_image(background, colour=(220, 30, 30), size=(160, 120), centre=(60, 70), radius=30, noise=0.0, seed=0):
    """An RGB image of a disc on `background` (a colour, or an [H, W, 3] array) and the true disc mask."""
    width, height = size
    y_HW, x_HW = np.mgrid[:height, :width]
    disc_HW = (x_HW + 0.5 - centre[0]) ** 2 + (y_HW + 0.5 - centre[1]) ** 2 <= radius**2
    pixels_HW3 = np.zeros((height, width, 3)) + np.asarray(background, dtype=float)
    pixels_HW3[disc_HW] = colour
    pixels_HW3 += np.random.default_rng(seed).normal(0.0, noise, pixels_HW3.shape)
    return Image.fromarray(np.clip(np.round(pixels_HW3), 0, 255).astype(np.uint8)), disc_HW


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def mask_bbox(mask_HW):
    rows, cols = np.flatnonzero(mask_HW.any(axis=1)), np.flatnonzero(mask_HW.any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def encode(image, fmt="PNG", **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def model_home(tmp_path, monkeypatch):
    """An empty rembg model home; U2NET_HOME makes rembg (and us) look nowhere else."""
    home = tmp_path / "u2net_home"
    home.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(home))
    _rembg_session.cache_clear()
    yield home
    _rembg_session.cache_clear()


# ---------------------------------------------------------------------------------------------- framing


@pytest.mark.parametrize("ratio, size", [(0.85, 128), (0.5, 96), (1.0, 64)])
def test_alpha_foreground_is_centred_at_the_ratio(ratio, size, model_home):
    pixels = np.zeros((120, 200, 4), dtype=np.uint8)
    pixels[30:60, 20:80] = (0, 128, 0, 255)  # a 60 x 30 opaque green bar, off centre
    pixels[:30, :, :3] = (255, 0, 255)  # colour hidden under transparent pixels must not show
    out = preprocess_image(Image.fromarray(pixels), foreground_ratio=ratio, size=size, remove_background="rembg")
    assert out.method == "alpha" and out.bbox == (20, 30, 80, 60)
    assert out.image.mode == "RGB" and out.rgba.mode == "RGBA" and out.image.size == out.rgba.size == (size, size)
    assert out.mask.shape == (size, size) and out.mask.dtype == np.float32
    x0, y0, x1, y1 = mask_bbox(out.mask >= 0.5)
    assert abs((x1 - x0) - ratio * size) <= 1.0 and abs((y1 - y0) - ratio * size / 2) <= 1.0
    assert abs((x0 + x1) / 2 - size / 2) <= 0.5 and abs((y0 + y1) / 2 - size / 2) <= 0.5
    rgb_HW3 = np.asarray(out.image).astype(int)
    assert (rgb_HW3[out.mask == 0] == 255).all()
    inner = rgb_HW3[size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2]
    assert np.abs(inner - (0, 128, 0)).max() <= 2
    np.testing.assert_allclose(out.mask, np.asarray(out.rgba.getchannel("A")) / 255.0)


def test_fully_opaque_alpha_counts_as_no_alpha():
    image, _ = disc_image((210, 210, 210))
    image.putalpha(255)
    assert preprocess_image(image, remove_background="builtin").method == "builtin"


def test_none_keeps_the_whole_image():
    image = Image.new("RGB", (100, 50), (30, 60, 200))
    out = preprocess_image(image, foreground_ratio=0.8, size=100, remove_background="none")
    assert out.method == "none" and out.bbox == (0, 0, 100, 50)
    x0, y0, x1, y1 = mask_bbox(out.mask >= 0.5)
    assert (x0, y0, x1, y1) == (10, 30, 90, 70)  # 80 x 40, centred
    rgb_HW3 = np.asarray(out.image).astype(int)
    assert np.abs(rgb_HW3[32:68, 12:88] - (30, 60, 200)).max() <= 1
    assert (rgb_HW3[:28] == 255).all() and (rgb_HW3[72:] == 255).all()


def test_empty_foreground_is_refused_with_a_hint():
    with pytest.raises(VatError, match="no object found.*remove_background='none'"):
        preprocess_image(Image.new("RGBA", (64, 64), (255, 0, 0, 0)))
    with pytest.raises(VatError, match="no object found"):
        preprocess_image(Image.new("RGB", (64, 64), (200, 200, 200)), remove_background="builtin")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"foreground_ratio": 0.0}, "foreground_ratio"),
        ({"foreground_ratio": 1.5}, "foreground_ratio"),
        ({"size": 4}, "size"),
        ({"remove_background": "magic"}, "remove_background"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(VatError, match=message):
        preprocess_image(Image.new("RGB", (32, 32)), **kwargs)


# ---------------------------------------------------------------------------------------------- built-in segmentation


def vertical_gradient(low, high, size=(160, 120)):
    ramp_H = np.linspace(low, high, size[1])
    return np.repeat(ramp_H[:, None, None], size[0], axis=1).repeat(3, axis=2)


@pytest.mark.parametrize(
    "background, colour",
    [
        ((210, 210, 210), (220, 30, 30)),  # red disc on light grey
        ((255, 255, 255), (90, 90, 90)),  # grey object on white
        ((40, 90, 200), (240, 200, 40)),  # yellow on blue
        ("gradient", (60, 40, 30)),  # dark object on a lit sweep (vignetting)
    ],
)
def test_builtin_segments_an_object_on_a_plain_background(background, colour):
    if background == "gradient":
        background = vertical_gradient(170, 240)
    image, disc_HW = disc_image(background, colour, noise=3.0)
    mask_HW = segment_plain_background(image)
    assert mask_HW.shape == disc_HW.shape and 0.0 <= mask_HW.min() and mask_HW.max() <= 1.0
    assert iou(mask_HW >= 0.5, disc_HW) > 0.95


def test_builtin_keeps_separate_parts_and_drops_border_clutter():
    image, disc_HW = disc_image((230, 230, 230), noise=2.0)
    pixels = np.array(image)
    pixels[40:60, 120:140] = (20, 20, 160)  # a second part, clear of the border
    pixels[:, :6] = (60, 60, 60)  # a dark strip cut by the frame (table edge, clutter)
    part_HW = np.zeros_like(disc_HW)
    part_HW[40:60, 120:140] = True
    mask_HW = segment_plain_background(Image.fromarray(pixels)) >= 0.5
    assert iou(mask_HW, disc_HW | part_HW) > 0.93
    assert not mask_HW[:, :6].any()


def test_builtin_frames_the_object_on_white():
    image, disc_HW = disc_image((200, 200, 200), noise=2.0)
    out = preprocess_image(image, foreground_ratio=0.85, size=128, remove_background="builtin")
    assert out.method == "builtin"
    x0, y0, x1, y1 = out.bbox
    assert abs(x0 - 30) <= 1 and abs(x1 - 90) <= 1 and abs(y0 - 40) <= 1 and abs(y1 - 100) <= 1
    rgb_HW3 = np.asarray(out.image).astype(int)
    assert (rgb_HW3[out.mask == 0] == 255).all() and (rgb_HW3[out.mask < 0.01] >= 252).all()  # grey became white
    assert (rgb_HW3[:8, :8] == 255).all() and np.abs(rgb_HW3[64, 64] - (220, 30, 30)).max() <= 8
    bx0, by0, bx1, by1 = mask_bbox(out.mask >= 0.5)
    assert abs((bx1 - bx0) - 0.85 * 128) <= 2 and abs((bx0 + bx1) / 2 - 64) <= 1


# ---------------------------------------------------------------------------------------------- loading


def png_with_header(width, height):
    """A PNG whose IHDR claims width x height and has no pixel data: a decompression bomb's calling card."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_load_rejects_non_images_truncated_files_and_bombs():
    with pytest.raises(VatError, match="not an image"):
        load_image(b"definitely not a picture")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise))
    with pytest.raises(VatError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])
    with pytest.raises(VatError, match="decompression bomb"):
        load_image(png_with_header(100_000, 100_000))
    with pytest.raises(VatError, match="decompression bomb"):
        load_image(png_with_header(9_000, 9_000))  # 81 MP: under Pillow's limit, over ours
    with pytest.raises(VatError, match="4.1 megapixels.*limit of 1.0"):
        load_image(png_with_header(2048, 2000), max_pixels=1_000_000)
    with pytest.raises(VatError, match="no image file"):
        load_image("/nonexistent/picture.png")
    with pytest.raises(VatError, match="channels last"):
        load_image(np.zeros((3, 16, 16), dtype=np.uint8))
    with pytest.raises(VatError, match="cannot read an image from a int"):
        load_image(7)


def test_load_downscales_huge_images():
    wide = Image.new("RGB", (4096, 16), (10, 20, 30))
    assert load_image(encode(wide)).size == (2048, 8)
    assert load_image(wide, max_side=100).size == (100, 1)
    assert load_image(Image.new("RGB", (300, 200)), max_side=150).size == (150, 100)


def test_load_honours_exif_orientation():
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left side ends on top
    image = load_image(encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (20, 40)
    loaded = np.asarray(image).astype(int)
    assert np.abs(loaded[5, 10] - (255, 0, 0)).max() < 40 and np.abs(loaded[35, 10] - (0, 0, 255)).max() < 40


def test_load_accepts_every_kind_of_source(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    sources = [path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes()), Image.fromarray(pixels), pixels]
    sources += [pixels / 255.0, pixels.astype(np.uint16) * 257]
    for source in sources:
        image = load_image(source)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    grey = load_image(np.eye(8, dtype=bool))
    assert grey.mode == "RGB" and np.asarray(grey)[0, 0, 0] == 255 and np.asarray(grey)[0, 1, 0] == 0
    palette = Image.new("P", (8, 8), 1)
    palette.info["transparency"] = 0
    assert load_image(encode(palette)).mode == "RGBA"
    assert load_image(encode(Image.new("RGBA", (8, 8), (1, 2, 3, 4)))).mode == "RGBA"


# ---------------------------------------------------------------------------------------------- rembg


def identity_onnx(shape):
    """A minimal ONNX model (y = Identity(x), float32 `shape`), protobuf-encoded by hand: the test
    needs a model rembg can load and the `onnx` package is no dependency."""

    def field(number, value):
        if isinstance(value, int):
            return varint(number << 3) + varint(value)
        value = value.encode() if isinstance(value, str) else value
        return varint(number << 3 | 2) + varint(len(value)) + value

    def varint(n):
        out = bytearray()
        while True:
            out.append(n & 0x7F | (0x80 if n >> 7 else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def tensor(name):  # ValueInfoProto{name, TypeProto{tensor_type{elem_type=FLOAT, shape}}}
        dims = b"".join(field(1, field(1, d)) for d in shape)
        return field(1, name) + field(2, field(1, field(1, 1) + field(2, dims)))

    node = field(1, "x") + field(2, "y") + field(4, "Identity")
    graph = field(1, node) + field(2, "identity") + field(11, tensor("x")) + field(12, tensor("y"))
    return field(1, 8) + field(7, graph) + field(8, field(2, 13))  # ir_version 8, opset 13


def test_rembg_is_used_only_when_its_model_is_on_disk(model_home):
    image, disc_HW = disc_image((210, 210, 210))
    assert find_rembg_model() is None
    assert preprocess_image(image, remove_background="auto").method == "builtin"
    with pytest.raises(VatError, match=f"u2net.onnx.*{model_home}"):
        preprocess_image(image, remove_background="rembg")


def test_rembg_runs_when_a_model_is_there(model_home):
    # u2net reads channel 0 of its output as the mask; the identity model hands back the red
    # channel, which is high on the red disc and low on grey: a stand-in that segments this image.
    (model_home / "u2net.onnx").write_bytes(identity_onnx((1, 3, 320, 320)))
    assert find_rembg_model() == ("u2net", model_home / "u2net.onnx")
    image, disc_HW = disc_image((150, 150, 150), colour=(250, 20, 20))
    rgba = image.copy()
    rgba.putalpha(255)  # opaque alpha: still goes to rembg
    out = preprocess_image(rgba, foreground_ratio=0.85, size=128, remove_background="auto")
    assert out.method == "rembg"
    x0, y0, x1, y1 = out.bbox
    assert abs(x0 - 30) <= 2 and abs(x1 - 90) <= 2 and abs(y0 - 40) <= 2 and abs(y1 - 100) <= 2
    assert preprocess_image(image, remove_background="builtin").method == "builtin"


def test_corrupt_rembg_model_falls_back_or_fails_clearly(model_home):
    (model_home / "u2net.onnx").write_bytes(b"")
    image, _ = disc_image((210, 210, 210))
    assert preprocess_image(image, remove_background="auto").method == "builtin"
    with pytest.raises(VatError, match="rembg could not run"):
        preprocess_image(image, remove_background="rembg")


@pytest.mark.parametrize("env", ["U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME", None])
def test_model_lookup_matches_rembg(env, tmp_path, monkeypatch):
    from rembg.sessions import sessions

    for name in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if env:
        monkeypatch.setenv(env, str(tmp_path / "models"))
    for name in ("u2net", "isnet-general-use", "u2netp", "silueta"):
        session = sessions[name]
        fname = f"{name}.onnx"
        expected = [os.path.join(session.model_dir(), fname), os.path.join(session.legacy_home(), fname)]
        assert [str(p) for p in _rembg_model_paths(name)] == expected


# ---------------------------------------------------------------------------------------------- photos


def _main_pieces(mask_HW):
    from vat.segment import PIECE_SHARE, pieces

    return len(pieces(mask_HW >= 0.5, PIECE_SHARE)[1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee", "rocket"])
def test_photos_come_out_in_one_main_piece_or_with_a_warning(name):
    """scikit-image's data photos (shipped with it, offline): GrabCut seeded by the plain-background mask
    gives one main piece, or the visitor is warned. The plain-background mask alone shreds them silently."""
    pytest.importorskip("cv2")
    import skimage.data

    photo = getattr(skimage.data, name)()
    out = preprocess_image(photo)
    assert out.method == "grabcut"
    assert _main_pieces(out.mask) == 1 or out.warning
    if name in ("chelsea", "coffee"):  # fur fragments; cup and saucer apart
        assert _main_pieces(preprocess_image(photo, remove_background="builtin").mask) > 1


def test_a_render_on_a_plain_background_keeps_the_plain_mask():
    image, disc_HW = disc_image((235, 235, 235))
    out = preprocess_image(image, remove_background="auto")
    assert out.method == "builtin" and out.warning == ""
    forced = preprocess_image(image, remove_background="grabcut")
    assert forced.method == "grabcut" and abs(np.array(forced.bbox) - np.array(out.bbox)).max() <= 3


@pytest.mark.parametrize("case, problem", [
    ("tiny", "tiny"), ("border", "touches the image's border"), ("pieces", "falls into 5 pieces"), ("fine", None)])
def test_doubtful_foregrounds_are_named(case, problem):
    from vat.segment import foreground_problems, foreground_warning

    mask_HW = np.zeros((200, 300), dtype=np.float32)
    if case == "tiny":
        mask_HW[100:105, 150:155] = 1
    elif case == "border":
        mask_HW[120:, 50:250] = 1
    elif case == "pieces":
        for k in range(5):
            mask_HW[80:120, 20 + 55 * k:60 + 55 * k] = 1
    else:
        mask_HW[40:160, 60:240] = 1
    problems = foreground_problems(mask_HW)
    if problem is None:
        assert problems == [] and foreground_warning(problems) == ""
    else:
        assert len(problems) == 1 and problem in problems[0]
        assert "transparent background" in foreground_warning(problems)


def test_a_cluttered_photo_gets_a_warning_and_a_transparent_png_none():
    rng = np.random.default_rng(0)
    clutter = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    warned = preprocess_image(clutter)
    from vat.preprocess import segment_plain_background
    from vat.segment import grabcut_mask, is_clean

    seed_HW = segment_plain_background(clutter) >= 0.5  # not one clean piece: GrabCut, where it finds something
    cut = None if is_clean(seed_HW) else grabcut_mask(np.asarray(clutter), seed_HW)
    assert warned.method == ("builtin" if cut is None else "grabcut") and "transparent background" in warned.warning
    rgba = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    rgba.paste((200, 20, 20, 255), (2, 2, 118, 118))  # an object up to the border, but its own alpha
    assert preprocess_image(rgba).warning == ""


@pytest.mark.slow
def test_a_photo_gives_the_same_cut_out_whatever_ran_before():
    """GrabCut draws from OpenCV's global random generator: the cut-out must not depend on its state."""
    cv2 = pytest.importorskip("cv2")
    import skimage.data

    photo = skimage.data.astronaut()
    first = preprocess_image(photo).mask
    cv2.setRNGSeed(12345)
    cv2.randu(np.zeros((64, 64), np.float32), 0, 1)  # other OpenCV work moves the generator on
    np.testing.assert_array_equal(preprocess_image(photo).mask, first)
