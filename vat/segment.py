"""Photo segmentation without a model file: OpenCV's GrabCut seeded by the plain-background mask, and
the checks that tell a visitor when the foreground found is doubtful.

The plain-background segmentation (vat.preprocess.segment_plain_background) is exact on renders and
product shots, but shreds photographs whose background is not one colour (a cat's fur, a table's
wood grain). GrabCut (colour models of object and background, refined by graph cuts) runs in the box
that the seed's main pieces span, grown a little; it needs nothing but `opencv-python-headless`.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

GRABCUT_SIDE = 256  # GrabCut runs at most at this size (its graph cut costs seconds at 512), the mask is upsampled
GRABCUT_ITERATIONS = 4
GRABCUT_SEED = 0  # OpenCV's random generator before each GrabCut (reproducible cut-outs)
SEED_SHARE = 0.1  # pieces of the seed mask with at least this share of its largest piece span the box
BOX_GROWTH = 0.1  # the box grows by this share of its size on each side (the seed misses thin edges)
EDGE_MARGIN = 0.01  # share of the shorter side always outside the box: GrabCut's sure background
EDGE_BAND = 0.02  # an object reaching into this band along the edge (share of the shorter side) touches it

# foreground_problems: a foreground under TINY_SHARE of the image, over BORDER_SHARE of the edge band's
# pixels, or in at least MANY_PIECES pieces (of PIECE_SHARE of the largest piece or more) is doubtful: the
# generator makes one object, so a second sizeable piece (a flag beside the astronaut) is worth a warning.
TINY_SHARE = 0.01
BORDER_SHARE = 0.05
MANY_PIECES = 2
PIECE_SHARE = 0.05


def grabcut_available() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def pieces(mask_HW: np.ndarray, share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Connected pieces of a boolean mask: (labels [H, W], the label of each piece of at least `share` of
    the largest piece's area, largest first)."""
    labels_HW, count = ndimage.label(mask_HW)
    if count == 0:
        return labels_HW, np.zeros(0, dtype=int)
    areas = np.bincount(labels_HW.ravel(), minlength=count + 1)
    areas[0] = 0
    order = np.argsort(-areas[1:]) + 1
    return labels_HW, order[areas[order] >= share * areas.max()]


def is_clean(mask_HW: np.ndarray) -> bool:
    """One piece, clear of the image's edge: what the plain-background segmentation gives on a render."""
    return len(pieces(mask_HW, PIECE_SHARE)[1]) == 1 and not _edge(mask_HW).any()


def seed_box(seed_HW: np.ndarray) -> tuple[int, int, int, int] | None:
    """GrabCut's box (x, y, width, height): the span of the seed's main pieces, grown by BOX_GROWTH, kept
    EDGE_MARGIN inside the image; None for an empty seed."""
    labels_HW, kept = pieces(seed_HW, SEED_SHARE)
    if not len(kept):
        return None
    main_HW = np.isin(labels_HW, kept)
    rows, cols = np.flatnonzero(main_HW.any(axis=1)), np.flatnonzero(main_HW.any(axis=0))
    height, width = seed_HW.shape
    margin = max(1, round(EDGE_MARGIN * min(height, width)))
    grow_y, grow_x = BOX_GROWTH * (rows[-1] + 1 - rows[0]), BOX_GROWTH * (cols[-1] + 1 - cols[0])
    y0, y1 = max(margin, round(rows[0] - grow_y)), min(height - margin, round(rows[-1] + 1 + grow_y))
    x0, x1 = max(margin, round(cols[0] - grow_x)), min(width - margin, round(cols[-1] + 1 + grow_x))
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    return x0, y0, x1 - x0, y1 - y0


def grabcut_mask(rgb_HW3: np.ndarray, seed_HW: np.ndarray) -> np.ndarray | None:
    """GrabCut's foreground [H, W] bool in the box of `seed_HW` (the plain-background mask, bool), run on at
    most GRABCUT_SIDE pixels a side; None when OpenCV is missing, the seed is empty or GrabCut fails or
    finds nothing."""
    try:
        import cv2
    except ImportError:
        log.info("opencv-python-headless is not installed: no GrabCut")
        return None
    height, width = seed_HW.shape
    scale = min(1.0, GRABCUT_SIDE / max(height, width))
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = cv2.resize(np.ascontiguousarray(rgb_HW3[..., ::-1]), size, interpolation=cv2.INTER_AREA)
    small_seed = cv2.resize(seed_HW.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    box = seed_box(small_seed)
    if box is None:
        return None
    mask = np.zeros(small_seed.shape, np.uint8)
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
    # GrabCut seeds its colour models' k-means from OpenCV's global random generator: fix it, so that the same
    # image gives the same cut-out whatever ran before in the process.
    cv2.setRNGSeed(GRABCUT_SEED)
    try:
        cv2.grabCut(small, mask, box, background, foreground, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    except cv2.error as exc:  # e.g. a box with no colour variation to model
        log.warning("GrabCut failed (%s); using the plain-background segmentation", exc)
        return None
    found = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    if not found.any():
        return None
    return cv2.resize(found, (width, height), interpolation=cv2.INTER_LINEAR) > 0


def _edge(mask_HW: np.ndarray) -> np.ndarray:
    """The mask's values in the band along the image's edge, EDGE_BAND of the shorter side wide (GrabCut's
    box stays EDGE_MARGIN inside, so an object cut by the frame ends there)."""
    band = max(1, round(EDGE_BAND * min(mask_HW.shape)))
    inner = np.zeros(mask_HW.shape, dtype=bool)
    inner[band:-band, band:-band] = True
    return mask_HW[~inner]


def foreground_problems(mask_HW: np.ndarray) -> list[str]:
    """What is doubtful about a segmented foreground (mask [H, W], >= 0.5 inside): tiny, touching the
    image's edge, or in many pieces. Empty when it looks fine."""
    inside = np.asarray(mask_HW) >= 0.5
    problems = []
    share = inside.mean()
    if share < TINY_SHARE:
        problems.append(f"the object found is tiny ({share:.1%} of the image)")
    edge = _edge(inside).mean()
    if edge > BORDER_SHARE:
        problems.append(f"it touches the image's border ({edge:.0%} of the edge), so it may be cut off or "
                        "include background")
    count = len(pieces(inside, PIECE_SHARE)[1])
    if count >= MANY_PIECES:
        problems.append(f"it falls into {count} pieces")
    return problems


def foreground_warning(problems: list[str]) -> str:
    """One sentence for the UI and the CLI from foreground_problems' list ("" for none)."""
    if not problems:
        return ""
    return f"The cut-out may be wrong: {'; '.join(problems)}. For a clean cut-out, upload a PNG with a transparent " \
           "background."
