"""MegaGlest's models (Debian megaglest-data, CC-BY-SA-3.0): faction units and buildings, and the
tilesets' trees, rocks and statues, as G3D files that vat's own reader keeps Y-up (frame 0).
Animation files of one unit (walking, attacking) are near duplicates the dedupe removes; dying,
destroyed and under-construction states are left out."""

from __future__ import annotations

from pathlib import PurePosixPath

from vat.sources.common import Candidate, caption_from_name, package_licence, package_root

PACKAGE = "megaglest-data"
DATA = "usr/share/games/megaglest"
FRAGMENTS = r"(?i)dying|dead|destroyed|construction|corpse|/menu/"


def _caption(relative: PurePosixPath) -> str | None:
    if "units" in relative.parts:  # techs/megapack/factions/romans/units/axe_man/models/axeman_walk.g3d
        return caption_from_name(relative.parts[relative.parts.index("units") + 1])
    return caption_from_name(relative.stem)


def megaglest(root: str | None = None) -> list[Candidate]:
    base = package_root(root, PACKAGE)
    licence = package_licence(base, PACKAGE)
    data = base / DATA
    candidates = []
    for path in sorted(data.rglob("*.g3d")):
        relative = PurePosixPath(path.relative_to(data).as_posix())
        candidates.append(Candidate(id=f"megaglest/{relative}", path=str(path), fmt="g3d",
                                    caption=_caption(relative), licence=licence, package=PACKAGE))
    return candidates
