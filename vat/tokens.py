"""The tokens of one shape, whichever way they came: encoded from a mesh (vat.pipeline.MeshCodec.encode) or
generated from an image or text (a Generation, vat.pipeline.Pipeline.generate). Either gives its mesh and its
.vat file for any prefix of its scales."""

from __future__ import annotations

import time
from dataclasses import KW_ONLY, InitVar, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import trimesh

from vat.codec import FLAG_ENTROPY, Placement
from vat.errors import VatError

if TYPE_CHECKING:
    from vat.pipeline import MeshCodec
    from vat.refine import Refined


def check_scales(scales: int | None, available: int) -> int:
    """A number of scales to decode or write, 1..`available`; None means all of them. VatError otherwise."""
    scales = available if scales is None else scales
    if not 1 <= scales <= available:
        raise VatError(f"scale must be between 1 and {available}, got {scales}")
    return scales


def decode_key(scales: int, resolution: int, clean: bool = True) -> str:
    """The timing key of a decode of the first `scales` scales at `resolution`: decode_s<S>_r<R>, with _raw when
    the mesh is not cleaned (vat.ui.stage_times adds every decode_* up under one label)."""
    return f"decode_s{scales}_r{resolution}" + ("" if clean else "_raw")


@dataclass(eq=False)
class Tokens:
    """Token indices of every stored scale, coarse to fine, and the codec that made them. `mesh(s)` and
    `vat(s)` give the mesh and the .vat file of the first s scales (all by default), each made once."""

    indices: list[np.ndarray]  # per scale: int64 [side * side]
    codec: MeshCodec | None  # None after unpickling (see __getstate__)
    _: KW_ONLY
    placement: Placement | None = None  # where an encoded mesh was (its .vat files store it); None: the unit cube
    resolution: int = 256  # mesh()'s marching-cubes grid unless it is given one
    raw: bool | None = None  # how vat() codes the tokens (MeshCodec.write: None, the smaller of raw and entropy)
    refined: Refined | None = None  # vat.refine's account when encoded with refine > 0
    timings: dict = field(default_factory=dict)  # seconds; decode_key(S, R, clean) as meshes are decoded
    written: InitVar[bytes | None] = None  # the .vat file of all the scales, when it is already written
    _files: dict = field(default_factory=dict, init=False, repr=False)  # scales -> .vat bytes
    _meshes: dict = field(default_factory=dict, init=False, repr=False)  # (scales, resolution, clean) -> mesh

    def __post_init__(self, written: bytes | None):
        if written is not None:
            self._files[self.num_scales] = bytes(written)

    def __getstate__(self) -> dict:
        """Pickled (as ZeroGPU returns a call's result from its worker process) without the codec, a model never
        to be copied by value, and without the decoded meshes; the tokens and the .vat files made so far travel.
        Set `codec` again to decode or write more."""
        return {**self.__dict__, "codec": None, "_meshes": {}}

    def _codec(self) -> MeshCodec:
        if self.codec is None:
            raise VatError("these tokens were unpickled without their codec: set .codec to the MeshCodec of the "
                           "checkpoint that made them to decode or write them")
        return self.codec

    @property
    def num_scales(self) -> int:
        return len(self.indices)

    @property
    def num_tokens(self) -> int:
        return sum(len(i) for i in self.indices)

    def tokens_at(self, scales: int | None = None) -> int:
        """Tokens in the first `scales` scales (all by default)."""
        return self._codec().tokens_at(scales or self.num_scales)

    def vat(self, scales: int | None = None) -> bytes:
        """The .vat file of the first `scales` scales (all by default)."""
        scales = check_scales(scales, self.num_scales)
        if scales not in self._files:
            self._files[scales] = self._codec().write(self.indices[:scales], self.placement, self.raw)
        return self._files[scales]

    @property
    def data(self) -> bytes:
        """The .vat file of all the scales."""
        return self.vat()

    @property
    def entropy_coded(self) -> bool:
        """Whether the .vat file of all the scales is entropy-coded (else bit-packed)."""
        data = self.data
        return bool(data[3] >= 2 and data[11] & FLAG_ENTROPY)

    def mesh(self, scales: int | None = None, resolution: int | None = None, clean: bool = True) -> trimesh.Trimesh:
        """The mesh decoded from the first `scales` scales at `resolution` (default: self.resolution); in the
        unit cube (`placement.apply(mesh)` puts an encoded mesh back where it was). `clean`: floaters removed
        (MeshCodec.decode_mesh's clean, vat.geometry.extract.postprocess); False keeps the raw extraction.
        Timed under decode_key(scales, resolution, clean)."""
        scales = check_scales(scales, self.num_scales)
        resolution = resolution or self.resolution
        key = (scales, resolution, clean)
        if key not in self._meshes:
            start = time.perf_counter()
            self._meshes[key] = self._codec().decode_mesh(self.indices, scales=scales, resolution=resolution,
                                                          clean=clean)
            self.timings[decode_key(scales, resolution, clean)] = time.perf_counter() - start
        return self._meshes[key]


@dataclass(eq=False)
class Sample:
    """One sample of an outline search (Pipeline.generate(search=K)): its seed (generate(seed=...) alone gives
    it again), its tokens, how well its outline fits the image (IoU, -1 when it has no surface) and from which
    view of the search's cameras (azimuth, elevation in degrees), and its occupancy on the search's grid (bool
    [R + 1]^3, vat.geometry.silhouette.outline_fits' input; None once dropped) for previews
    (vat.geometry.silhouette.shaded_view)."""

    seed: int
    indices: list[np.ndarray]
    outline_score: float
    view: tuple[float, float]
    occupancy: np.ndarray | None = None


@dataclass(eq=False, kw_only=True)
class Generation(Tokens):
    """What `Pipeline.generate` returns: the tokens, the seed and settings that made them, the preprocessed
    input and the timings (seconds: preprocess, condition, sample, search; decode_s<S>_r<R> as meshes are
    decoded). After an outline search, `samples` holds every sample drawn (in seed order), the kept one among
    them, and `choose(seed)` gives the Generation of another."""

    seed: int
    settings: dict  # the sampling settings used, the text, and the preprocessing's
    input_image: object | None = None  # PIL.Image the model saw (RGB on white), None for text only
    preprocess_method: str | None = None  # alpha | rembg | grabcut | builtin | none
    preprocess_warning: str = ""  # the segmented foreground looks wrong (vat.preprocess.Preprocessed.warning)
    samples: list[Sample] = field(default_factory=list)  # the outline search's samples, in seed order

    def samples_by_fit(self) -> list[Sample]:
        """The search's samples, best outline first (the kept one), equal fits by seed."""
        return sorted(self.samples, key=lambda s: (-s.outline_score, s.seed))

    def choose(self, seed: int) -> Generation:
        """The Generation of another of the search's samples (by its seed): its tokens, with this one's input,
        settings (its outline score), samples and resolution. VatError for a seed the search did not draw."""
        sample = next((s for s in self.samples if s.seed == seed), None)
        if sample is None:
            drawn = ", ".join(str(s.seed) for s in self.samples) or "none: no search was made"
            raise VatError(f"sample seed {seed} is not one of this generation's samples (seeds: {drawn})")
        return replace(self, indices=sample.indices, seed=sample.seed,
                       settings={**self.settings, "outline_score": sample.outline_score},
                       timings={k: v for k, v in self.timings.items() if not k.startswith("decode_")})
