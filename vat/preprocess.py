"""Image preprocessing for image-to-3D: load an upload safely, cut the object out, frame it on white.

The generator is conditioned on renders of one object centred on white, so every input image is
brought to that framing: the foreground comes from the image's own alpha channel, else rembg (only
when its model file is already on disk: nothing is ever downloaded), else a built-in segmentation
made for the common case of an object on a plain background, refined by GrabCut (vat.segment) where
that gives no clean single piece, as on photographs. The object's bounding box is then
centred and scaled so its longer side is `foreground_ratio` of the square output.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from vat.errors import VatError
from vat.preprocess_config import DEFAULT_PREPROCESS, REMOVE_BACKGROUND, PreprocessConfig  # noqa: F401
from vat.segment import foreground_problems, foreground_warning, grabcut_mask, is_clean

log = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray, Image.Image]

MAX_SIDE = 2048  # longer side of a loaded image; more only costs time, the output is 512
MAX_PIXELS = 64_000_000  # declared size above this is refused before decoding (decompression bombs)
# rembg models looked for, best first for a single object; u2net leads because it runs in about a
# second on a CPU. Each is used only if its file is already on disk.
REMBG_MODELS = ("u2net", "isnet-general-use", "u2netp", "silueta")
REMBG_MODEL_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/{name}.onnx"

SEGMENT_SIDE = 768  # the built-in segmentation runs at most at this size, then the mask is upsampled
MIN_COLOUR_DISTANCE = 8.0  # CIELAB distance below which a pixel is background whatever Otsu says
_BORDER_FRACTION = 0.02  # share of the shorter side sampled as the background border strip


@dataclass(frozen=True)
class Preprocessed:
    """An image framed for the generator, and how its foreground was found."""

    image: Image.Image  # RGB, the object composited on white, size x size
    rgba: Image.Image  # RGBA, same framing, transparent outside the object
    mask: np.ndarray  # float32 [size, size] in [0, 1], the alpha of `rgba`
    method: str  # "alpha" | "rembg" | "grabcut" | "builtin" | "none": where the foreground came from
    bbox: tuple[int, int, int, int]  # foreground (x0, y0, x1, y1), x1/y1 exclusive, in loaded-image pixels
    warning: str = ""  # a segmented foreground that looks wrong (vat.segment.foreground_problems), else ""


# ---------------------------------------------------------------------------------------------- loading


def load_image(source: ImageSource, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `source` into an RGB or RGBA image (RGBA when it has transparency), upright per its
    EXIF orientation, with the longer side at most `max_side`.

    `source` is a path, encoded bytes, a binary file object, a PIL image, or an array
    [H, W], [H, W, 1|3|4] (uint8; other integers up to 65535; bool; float in [0, 1]).
    Non-images, truncated or corrupt files, and images over `max_pixels` (checked on the declared
    size, before decoding, so a tiny file claiming a huge size costs nothing) raise VatError.
    """
    if int(max_side) < 1 or int(max_pixels) < 1:
        raise VatError(f"max_side and max_pixels must be positive, got {max_side} and {max_pixels}")
    if isinstance(source, np.ndarray):
        image = _from_array(source)
        _check_pixels(image.size, max_pixels, "the array")
    elif isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "the image")
        try:
            source.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise VatError(f"the image could not be decoded (truncated or corrupt?): {exc}") from exc
        image = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise VatError(f"no image file at {str(path)!r}")
        with path.open("rb") as fp:
            image = _decode(fp, str(path), max_side, max_pixels)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = _decode(io.BytesIO(bytes(source)), "the image data", max_side, max_pixels)
    elif hasattr(source, "read"):
        image = _decode(source, "the image file", max_side, max_pixels)
    else:
        raise VatError(
            f"cannot read an image from a {type(source).__name__}; pass a path, bytes, a file object, "
            "a PIL image or a numpy array"
        )
    image = _upright(image)
    image = _rgb_or_rgba(image)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _decode(fp: BinaryIO, name: str, max_side: int, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (89 MP); ours is checked right below and is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
        _check_pixels(image.size, max_pixels, name)
        if max(image.size) > max_side:
            image.draft(None, (max_side, max_side))  # JPEG decodes at 1/2..1/8 scale for free; no-op otherwise
        image.load()
    except Image.DecompressionBombError as exc:
        raise VatError(f"{name} is refused as a possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise VatError(f"{name} is not an image (not a format Pillow can read, e.g. PNG, JPEG, WebP)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise VatError(f"{name} could not be decoded; the file is truncated or corrupt ({exc})") from exc
    return image


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise VatError(f"{name} is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise VatError(
            f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f} (refused as a possible decompression bomb); downscale it first"
        )


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise VatError(f"an image array must be [H, W] or [H, W, 1|3|4] (channels last), got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise VatError("the image array has NaN or infinite values")
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        # 16-bit data (PNG, TIFF) keeps its full range; 8-bit values stay as they are
        if array.size and array.max() > 255:
            array = np.round(np.clip(array, 0, 65535) / 257.0)
        array = np.clip(array, 0, 255).astype(np.uint8)
    else:
        raise VatError(f"an image array must hold integers, booleans or floats, got {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # malformed EXIF is metadata damage, not a reason to refuse the picture
        log.warning("ignoring unreadable EXIF orientation: %s", exc)
        return image


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _from_array(np.asarray(image)).convert("RGB")  # Pillow's convert clips 16-bit to 255
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        return image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as exc:
        raise VatError(f"cannot convert a {image.mode} image to RGB: {exc}") from exc


# ---------------------------------------------------------------------------------------------- framing


def preprocess_image(
    image: ImageSource,
    foreground_ratio: float = DEFAULT_PREPROCESS.foreground_ratio,
    size: int = DEFAULT_PREPROCESS.size,
    remove_background: str = DEFAULT_PREPROCESS.remove_background,
) -> Preprocessed:
    """Find the object in `image` and frame it: centred, its longer side `foreground_ratio` of a
    `size` x `size` square, on white.

    remove_background: "auto" uses the alpha channel if it has any transparency, else rembg if a
    model file is on disk, else the built-in segmentation: the plain-background mask where it is one piece
    clear of the edge, else GrabCut seeded by it (vat.segment); "rembg", "grabcut" and "builtin" (the
    plain-background mask alone) force that step (the alpha channel still wins); "none" keeps the whole
    image as the object. A segmented foreground that is tiny, touches the border or falls into many pieces
    gets a `warning`.
    """
    PreprocessConfig(foreground_ratio, size, remove_background)  # checks them
    image = load_image(image)
    mask_HW, method = _foreground(image, remove_background)
    foreground_HW = mask_HW >= 0.5
    if not foreground_HW.any():
        raise VatError(
            f"no object found in the image (foreground from {method!r} is empty); "
            "try remove_background='none' or an image with a plain background"
        )
    rows, cols = np.flatnonzero(foreground_HW.any(axis=1)), np.flatnonzero(foreground_HW.any(axis=0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    rgba = _on_white(image).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.round(mask_HW * 255.0).astype(np.uint8)))
    framed = _frame(rgba, bbox, foreground_ratio, int(size))
    on_white = Image.alpha_composite(Image.new("RGBA", framed.size, (255, 255, 255, 255)), framed).convert("RGB")
    mask = np.asarray(framed.getchannel("A"), dtype=np.float32) / 255.0
    warning = foreground_warning(foreground_problems(mask_HW)) if method not in ("alpha", "none") else ""
    return Preprocessed(image=on_white, rgba=framed, mask=mask, method=method, bbox=bbox, warning=warning)


def _on_white(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")


def _frame(rgba: Image.Image, bbox: tuple[int, int, int, int], foreground_ratio: float, size: int) -> Image.Image:
    """The square window around `bbox` whose side is the bbox's longer side / foreground_ratio,
    resampled to size x size; the part outside the image stays transparent.

    Only the part of the window inside the image is resampled, so memory stays bounded however
    small foreground_ratio is; its placement is rounded to whole output pixels.
    """
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0) / foreground_ratio
    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    scale = size / side
    box = (max(0.0, left), max(0.0, top), min(float(rgba.width), left + side), min(float(rgba.height), top + side))
    dest = [round((box[0] - left) * scale), round((box[1] - top) * scale)]
    dest += [round((box[2] - left) * scale), round((box[3] - top) * scale)]
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    # Pillow resamples RGBA premultiplied, so hidden colours under transparent pixels do not bleed in
    inside = rgba.resize((dest[2] - dest[0], dest[3] - dest[1]), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    canvas.paste(inside, (dest[0], dest[1]))
    return canvas


# ---------------------------------------------------------------------------------------------- foreground


def _foreground(image: Image.Image, remove_background: str) -> tuple[np.ndarray, str]:
    """The object's soft mask [H, W] in [0, 1] and the method that made it."""
    if remove_background == "none":
        return np.ones((image.height, image.width), dtype=np.float32), "none"
    if image.mode == "RGBA":
        alpha_HW = np.asarray(image.getchannel("A"))
        if alpha_HW.min() < 255:  # a fully opaque alpha says nothing about the object
            return alpha_HW.astype(np.float32) / 255.0, "alpha"
    rgb = image.convert("RGB")
    if remove_background in ("auto", "rembg"):
        found = find_rembg_model()
        if found is None and remove_background == "rembg":
            raise VatError(_missing_rembg_model_message())
        if found is not None:
            try:
                return _rembg_mask(rgb, *found), "rembg"
            except VatError as exc:
                if remove_background == "rembg":
                    raise
                log.warning("%s; using the built-in segmentation instead", exc)
        else:
            log.info("no rembg model on disk (%s); using the built-in segmentation", _rembg_model_paths("u2net")[0])
    seed_HW = segment_plain_background(rgb)
    if remove_background == "builtin" or (remove_background == "auto" and is_clean(seed_HW >= 0.5)):
        return seed_HW, "builtin"
    cut_HW = grabcut_mask(np.asarray(rgb), seed_HW >= 0.5)
    if cut_HW is None:
        return seed_HW, "builtin"
    return tidy_mask(cut_HW), "grabcut"


def _rembg_model_paths(name: str) -> list[Path]:
    """Where rembg 2.0.86 looks for `<name>.onnx`, in its order (BaseSession.resolve_existing):
    <home>/models/<name>/, then the legacy flat folder. U2NET_HOME, when set, is both; else home is
    REMBG_HOME or $XDG_DATA_HOME/rembg or ~/.rembg, and the legacy folder $XDG_DATA_HOME/.u2net or ~/.u2net.
    Mirrored here so that looking costs no rembg import (seconds) and can never start a download."""
    legacy = os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net")))
    if os.getenv("U2NET_HOME"):
        home = legacy
    else:
        xdg = os.getenv("XDG_DATA_HOME")
        default = os.path.join(xdg, "rembg") if xdg else os.path.join("~", ".rembg")
        home = os.path.expanduser(os.getenv("REMBG_HOME", default))
    fname = f"{name}.onnx"
    return [Path(home, "models", name, fname), Path(legacy, fname)]


def find_rembg_model() -> tuple[str, Path] | None:
    """(model name, file) of the first of REMBG_MODELS already on disk where rembg looks, else None."""
    for name in REMBG_MODELS:
        for path in _rembg_model_paths(name):
            if path.is_file():
                return name, path
    return None


def _missing_rembg_model_message() -> str:
    return (
        f"remove_background='rembg' needs a rembg model file and none of {[f'{n}.onnx' for n in REMBG_MODELS]} "
        f"is on disk; place u2net.onnx (from {REMBG_MODEL_URL.format(name='u2net')}) at "
        f"{_rembg_model_paths('u2net')[0]} or in the folder named by U2NET_HOME, "
        "or use remove_background='auto' to fall back to the built-in segmentation"
    )


@functools.lru_cache(maxsize=2)
def _rembg_session(name: str, path: Path):
    import rembg  # slow to import, so only once a model file is known to be there
    from rembg.sessions import sessions

    # rembg downloads whatever it does not find; make sure it finds exactly the file we did
    found = sessions[name].resolve_existing(f"{name}.onnx")
    if found is None or Path(found).resolve() != path.resolve():
        raise VatError(f"rembg does not find its model {name}.onnx at {path} (it finds {found}); not downloading it")
    return rembg.new_session(name)


def _rembg_mask(rgb: Image.Image, name: str, path: Path) -> np.ndarray:
    try:
        session = _rembg_session(name, path)
        import rembg

        mask = rembg.remove(rgb, session=session, only_mask=True)
    except VatError:
        raise
    except Exception as exc:  # a corrupt model file surfaces as an onnxruntime error of any type
        raise VatError(f"rembg could not run its model {path}: {exc}") from exc
    return np.asarray(mask.convert("L").resize(rgb.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def segment_plain_background(image: Image.Image) -> np.ndarray:
    """Soft object mask [H, W] in [0, 1] of `image` for an object on a plain background (white,
    grey or coloured, smooth gradients and vignetting allowed); no model involved.

    The background colour is fitted to the image border, pixels far from it in CIELAB (Otsu's
    threshold on the distance) are the object; of those, the largest connected component and any
    component clear of the border are kept, holes filled, the outline smoothed and feathered.
    """
    rgb = image.convert("RGB")
    scale = min(1.0, SEGMENT_SIDE / max(rgb.size))
    if scale < 1.0:
        work_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(work_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    lab_HW3 = rgb2lab(np.asarray(rgb))
    distance_HW = np.linalg.norm(lab_HW3 - _background_lab(lab_HW3), axis=-1)
    if distance_HW.max() <= MIN_COLOUR_DISTANCE:
        return np.zeros((image.height, image.width), dtype=np.float32)
    threshold = max(float(threshold_otsu(distance_HW)), MIN_COLOUR_DISTANCE)
    soft_HW = tidy_mask(_morph(distance_HW > threshold, ndimage.binary_opening, 1))  # opened: no speckle noise
    if soft_HW.shape != (image.height, image.width):
        soft_HW = np.asarray(Image.fromarray(soft_HW.astype(np.float32)).resize(image.size, Image.Resampling.BILINEAR))
    return np.clip(soft_HW, 0.0, 1.0)


def tidy_mask(object_HW: np.ndarray) -> np.ndarray:
    """A binary object mask made a soft one [H, W] in [0, 1]: its object components (_object_components),
    holes filled, the outline smoothed and feathered."""
    object_HW = _object_components(object_HW)
    radius = max(1, round(0.004 * max(object_HW.shape)))
    object_HW = _morph(object_HW, ndimage.binary_closing, radius)
    object_HW = ndimage.binary_fill_holes(object_HW)
    object_HW = _morph(object_HW, ndimage.binary_opening, radius)
    return np.clip(ndimage.gaussian_filter(object_HW.astype(np.float32), sigma=0.7), 0.0, 1.0)


def _background_lab(lab_HW3: np.ndarray) -> np.ndarray:
    """Background colour [H, W, 3]: a quadratic surface per channel fitted to the border strip,
    refitted twice without the border pixels it fits worst (an object touching the edge)."""
    height, width, _ = lab_HW3.shape
    strip = max(1, round(_BORDER_FRACTION * min(height, width)))
    border_HW = np.ones((height, width), dtype=bool)
    border_HW[strip:-strip, strip:-strip] = False
    y_HW, x_HW = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    basis_HWK = np.stack([np.ones_like(x_HW), x_HW, y_HW, x_HW * x_HW, x_HW * y_HW, y_HW * y_HW], axis=-1)
    basis_NK, colour_N3 = basis_HWK[border_HW], lab_HW3[border_HW]
    coeff_K3 = np.linalg.lstsq(basis_NK, colour_N3, rcond=None)[0]
    for _ in range(2):
        residual_N = np.linalg.norm(colour_N3 - basis_NK @ coeff_K3, axis=-1)
        keep_N = residual_N <= max(2.5 * float(np.median(residual_N)), 2.0)
        coeff_K3 = np.linalg.lstsq(basis_NK[keep_N], colour_N3[keep_N], rcond=None)[0]
    return basis_HWK @ coeff_K3


def _morph(mask_HW: np.ndarray, operation, radius: int) -> np.ndarray:
    """A binary morphology step that treats the image edge as continuing (edge padding), so objects
    cut by the frame are not eaten from the side."""
    padded = np.pad(mask_HW, radius, mode="edge")
    return operation(padded, structure=disk(radius))[radius:-radius, radius:-radius]


def _object_components(mask_HW: np.ndarray) -> np.ndarray:
    """The largest component, plus components clear of the border that are at least 1% of it
    (separate parts of the object); the rest is clutter or background cut by the frame."""
    labels_HW, count = ndimage.label(mask_HW)
    if count <= 1:
        return labels_HW > 0
    areas = np.bincount(labels_HW.ravel(), minlength=count + 1)
    areas[0] = 0
    largest = int(np.argmax(areas))
    edge = np.unique(np.concatenate([labels_HW[0], labels_HW[-1], labels_HW[:, 0], labels_HW[:, -1]]))
    keep = (areas >= 0.01 * areas[largest]) & ~np.isin(np.arange(count + 1), edge)
    keep[largest] = True
    keep[0] = False
    return keep[labels_HW]
