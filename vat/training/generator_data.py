"""Stage-2 data: folders of train/prepare_generator_data.py as the generator's training items (tokens,
one view, the conditions in the form the run consumes), and the augmentation of a training view."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vat import data
from vat.models.conditioning import ConditionEncoders, image_encoder_config
from vat.training.distributed import encoder_fingerprints

FORMAT_VERSION = 2  # of train/prepare_generator_data.py's folders; 2: framed renders and their masks (1: raw orbit renders, no masks)
MANIFEST = "manifest.json"  # the folder's settings: format, tokenizer, views, size, encoders

# Augmentation of a training view (framed by prepare_generator_data as vat.preprocess frames an input:
# the object centred, its longer side 0.85 of the square). Light, so the views still look like inputs.
SCALE_JITTER = 0.15  # the object's size is multiplied by a factor in [1 / 1.15, 1.15] (log-uniform)...
SHIFT_JITTER = 0.1  # ...and it moves by up to this share of the side along each axis, both bounded so it stays whole
BACKGROUND_PROBABILITY = 0.5  # share of views whose white background becomes a uniformly random colour


def augment_view(view_SS3: np.ndarray, mask_SS: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random scale and shift of a view on white with its foreground mask (uint8, 255 = object),
    then, with BACKGROUND_PROBABILITY, a random background colour; returns (uint8 view [S, S, 3],
    uint8 mask [S, S]). The scale is capped and the shift bounded so that the object's bounding box
    (pixels with any coverage) stays inside the image: the object is never cut."""
    side = view_SS3.shape[0]
    centre = side / 2
    rows, cols = np.flatnonzero(mask_SS.any(axis=1)), np.flatnonzero(mask_SS.any(axis=0))
    if len(rows):  # the box's pixel edges (x0, y0), (x1, y1) relative to the centre
        low_2, high_2 = np.array([cols[0], rows[0]]) - centre, np.array([cols[-1], rows[-1]]) + 1 - centre
    else:
        low_2, high_2 = np.full(2, -centre), np.full(2, centre)
    fits = centre / max(-low_2.min(), high_2.max(), 1.0)  # the largest scale that keeps the box inside
    scale = min(math.exp(rng.uniform(-math.log1p(SCALE_JITTER), math.log1p(SCALE_JITTER))), fits)
    # A pixel edge x goes to centre + scale * (x - centre) + shift, which must stay in [0, side].
    lowest_2 = np.maximum(-centre - scale * low_2, -SHIFT_JITTER * side)
    highest_2 = np.minimum(centre - scale * high_2, SHIFT_JITTER * side)
    # At the capped scale a box centred on an axis has no room to move: both bounds are 0 up to
    # rounding, which can leave them a hair the wrong way round.
    shift_2 = rng.uniform(np.minimum(lowest_2, highest_2), highest_2)
    # grid_sample reads, for each output pixel, the input at (output - shift) / scale in [-1, 1] units.
    theta_123 = torch.tensor([[[1 / scale, 0.0, -2 * shift_2[0] / side / scale],
                               [0.0, 1 / scale, -2 * shift_2[1] / side / scale]]], dtype=torch.float32)
    # The view less white, so that what comes in from outside the image (zeros) is white.
    planes_SS4 = np.concatenate([view_SS3.astype(np.float32) - 255.0, mask_SS[..., None].astype(np.float32)], axis=-1)
    planes_14SS = torch.from_numpy(planes_SS4).permute(2, 0, 1)[None]
    grid = F.affine_grid(theta_123, [1, 4, side, side], align_corners=False)
    warped_SS4 = F.grid_sample(planes_14SS, grid, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    view_SS3, mask_SS1 = warped_SS4[..., :3] + 255.0, warped_SS4[..., 3:]
    if rng.random() < BACKGROUND_PROBABILITY:  # the view is object * alpha + white * (1 - alpha)
        view_SS3 = view_SS3 + (1.0 - mask_SS1 / 255.0) * (rng.integers(0, 256, 3) - 255.0)
    return (np.clip(np.rint(view_SS3), 0, 255).astype(np.uint8),
            np.clip(np.rint(mask_SS1[..., 0]), 0, 255).astype(np.uint8))


class GeneratorShapes(data.ShardDataset):
    """Shapes of a train/prepare_generator_data.py folder as tensors: the tokens of all scales, one
    view chosen with the seed that comes with the index (a ShardBatches element; a plain index and
    `view` for validation), and the conditions in the form the run consumes: cached features, or
    renders (augmented with the same seed when `augment`) and caption token ids for the encoders to
    run on. Of a chunk only the arrays the run reads are loaded."""

    def __init__(self, directory: str | os.PathLike, image: str | None, text: str | None, tokenize=None,
                 view: int | None = None, augment: bool = False, exclude=None):
        """image: "features" (cached), "views" (renders) or None; text: "features", "ids" or None;
        exclude: a predicate on shape ids whose shapes are left out (as are those of the folder's
        excluded-ids.txt, see vat.data.ShardDataset)."""
        manifest = read_manifest(directory)
        self.views = manifest["views"]
        self.augment = augment and image == "views"
        if self.augment and manifest["format_version"] < 2:
            raise SystemExit(f"{directory} holds no foreground masks (format {manifest['format_version']}), which "
                             "augmentation needs: prepare it again with train/prepare_generator_data.py, "
                             "or train with --no-augment")
        super().__init__(directory, exclude)
        if not self.records:
            raise SystemExit(f"{directory} holds no shapes of train/prepare_generator_data.py" +
                             (" outside the validation split" if exclude is not None else ""))
        self.image, self.text, self.tokenize, self.view = image, text, tokenize, view
        self.keys = ["tokens"] + {"features": ["image_features"], "views": ["views"]}.get(image, []) + \
            (["masks"] if self.augment else []) + (["text_features"] if text == "features" else [])

    def _chunk(self, c: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != c:
            with np.load(self.chunks[c]) as arrays:
                missing = [k for k in self.keys if k not in arrays.files]
                if missing:
                    raise SystemExit(f"{self.chunks[c]} has no {', '.join(missing)}: prepare the data with the "
                                     "encoders whose features it should cache")
                self._cached = (c, {k: arrays[k] for k in self.keys})
        return self._cached[1]

    def __getitem__(self, key: int | tuple[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        index, entropy = key if isinstance(key, tuple) else (key, None)
        c, row = self._index[index]
        arrays = self._chunk(c)
        rng = np.random.default_rng(entropy)
        view = self.view if self.view is not None else int(rng.integers(self.views))
        item = {"tokens": torch.from_numpy(arrays["tokens"][row].astype(np.int64))}
        if self.image == "features":
            item["image_features"] = torch.from_numpy(arrays["image_features"][row][view].astype(np.float32))
        elif self.augment:
            view_SS3, _ = augment_view(arrays["views"][row][view], arrays["masks"][row][view], rng)
            item["views"] = torch.from_numpy(view_SS3)
        elif self.image == "views":
            item["views"] = torch.from_numpy(arrays["views"][row][view])
        if self.text == "features":
            item["text_features"] = torch.from_numpy(arrays["text_features"][row].astype(np.float32))
        elif self.text == "ids":
            item["text_ids"] = self.tokenize([self.records[index].get("caption") or ""])[0]
        return item


def read_manifest(directory: str) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise SystemExit(f"{directory} has no {MANIFEST}: prepare it with train/prepare_generator_data.py")
    return json.loads(path.read_text())


def _read_image_entry(entry: dict) -> dict:
    """A manifest's image encoder entry with its config read through the tagged reader (DINOv2 configs
    were saved without a kind); as it is when this version cannot read it (then it matches nothing)."""
    try:
        config = dataclasses.asdict(image_encoder_config(entry["config"]))
    except (KeyError, TypeError, ValueError):
        return entry
    return {**entry, "config": json.loads(json.dumps(config))}


def condition_sources(encoders: ConditionEncoders, manifest: dict, uses_image: bool, uses_text: bool,
                      augment: bool) -> tuple[str | None, str | None]:
    """How each condition reaches the generator: "features" cached in the data (only from the same
    encoder, frozen in this run, and for images only without augmentation: the cache holds the views
    as they are), else "views" / "ids" for the encoders to run on; None if unused."""
    fingerprints = encoder_fingerprints(encoders)
    saved = {**manifest.get("encoders", {})}
    if "image" in saved:
        saved["image"] = _read_image_entry(saved["image"])
    cached = {name: name in fingerprints and saved.get(name) == json.loads(json.dumps(fingerprints[name]))
              and not any(p.requires_grad for p in getattr(encoders, name).parameters()) for name in ("image", "text")}
    image = ("features" if cached["image"] and not augment else "views") if uses_image else None
    text = ("features" if cached["text"] else "ids") if uses_text else None
    return image, text
