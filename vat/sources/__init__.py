"""Mesh sources beyond the Sweet Home 3D catalogues: Debian game and simulator data and PyPI
packages. Each source lists Candidates (vat.sources.common); train/collect_meshes.py loads them
(vat.sources.load), filters and dedupes them (vat.sources.dedupe) into data/collected/.

SOURCES is in priority order (everyday objects first): where two sources hold the same shape,
the earlier one keeps it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from vat.sources import (
    flightgear,
    homedecor,
    megaglest,
    morse,
    pybullet,
    redeclipse,
    small_games,
    supertuxkart,
    ufoai,
    zeroad,
)
from vat.sources.common import Candidate
from vat.sources.sweethome3d import sweethome3d_default


@dataclass(frozen=True)
class Source:
    """`candidates(root)` lists the meshes (root: the folder holding unpacked packages, None for
    the installed system); ids matching `fragments` (a regex) are parts of a bigger model, skipped."""

    candidates: Callable[[str | None], list[Candidate]]
    packages: tuple[str, ...]
    fragments: str | None = None


SOURCES: dict[str, Source] = {
    "sweethome3d-default": Source(sweethome3d_default, ("sweethome3d",)),
    "ufoai": Source(ufoai.ufoai, (ufoai.PACKAGE,), ufoai.FRAGMENTS),
    "morse": Source(morse.morse, (morse.PACKAGE,)),
    "homedecor": Source(homedecor.homedecor, (homedecor.PACKAGE,)),
    "redeclipse": Source(redeclipse.redeclipse, (redeclipse.PACKAGE,), redeclipse.FRAGMENTS),
    "pybullet-objects": Source(pybullet.pybullet_objects, ("pybullet",)),
    "flightgear": Source(flightgear.flightgear, flightgear.PACKAGES, flightgear.FRAGMENTS),
    "0ad": Source(zeroad.zeroad, (zeroad.PACKAGE,), zeroad.FRAGMENTS),
    "supertuxkart": Source(supertuxkart.supertuxkart, (supertuxkart.PACKAGE,), supertuxkart.FRAGMENTS),
    "megaglest": Source(megaglest.megaglest, (megaglest.PACKAGE,), megaglest.FRAGMENTS),
    **{name: Source(functools.partial(small_games.game_candidates, name), (game.package,), game.fragments)
       for name, game in small_games.GAMES.items()},
}
