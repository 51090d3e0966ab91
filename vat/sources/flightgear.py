"""FlightGear's scenery and AI models (Debian flightgear-data-base, -models, -ai; GPL-2+): aircraft,
ground vehicles, ships, buildings and street furniture in AC3D format (Y-up), read through
assimp. Liveries (the same geometry, another texture) are left to the geometry-hash dedupe."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from vat.data import _caption_from_name
from vat.sources.common import Candidate, caption_from_name, package_licence, package_root

PACKAGES = ("flightgear-data-base", "flightgear-data-models", "flightgear-data-ai")
FG_ROOT = "usr/share/games/flightgear"
FOLDERS = ("Scenery/Models", "Models", "AI/Aircraft", "AI/Traffic")
# Not objects: light and smoke effects, weather and sky, fences along tiles, instrument parts.
SKIP = {"Effects", "Weather", "Astro", "Boundaries", "Lights", "Instruments-3d", "Volcanoes"}
# Cockpit and interior pieces, and the low-detail copies some models keep beside the full one.
FRAGMENTS = r"(?i)/(interior|cockpit|panel|instruments?)/|[_-]lod\d|[_-](low|lo)(res)?\.ac$|[_-]shadow\.ac$"

AIRPORT_CODE = re.compile(r"^[A-Z]{4}[-_](?=[A-Za-z])")


def _caption(relative: PurePosixPath) -> str | None:
    if relative.parts[:2] == ("AI", "Aircraft"):  # files are named by variant: "767-300ER.ac"
        return _caption_from_name(f"{relative.parts[2]} aircraft")
    if relative.parts[:3] == ("Scenery", "Models", "Aircraft"):  # parked aircraft: "atr42-airfrance.ac"
        return caption_from_name(f"{relative.stem.split('-')[0]} aircraft")
    stem = AIRPORT_CODE.sub("", relative.stem)  # "EBLG_terminal_airport": a terminal at Liège
    for name in (stem, relative.parent.name, relative.parent.parent.name):
        caption = caption_from_name(name)
        if caption and name.lower() != "models":
            return caption
    return None


def flightgear(root: str | None = None) -> list[Candidate]:
    candidates = []
    for package in PACKAGES:
        base = package_root(root, package)
        licence = package_licence(base, package)
        for folder in FOLDERS:
            for path in sorted((base / FG_ROOT / folder).rglob("*")):
                if path.suffix.lower() != ".ac" or SKIP & set(path.parts) or not path.is_file():
                    continue
                relative = PurePosixPath(path.relative_to(base / FG_ROOT).as_posix())
                candidates.append(Candidate(
                    id=f"flightgear/{relative}", path=str(path), fmt="ac", caption=_caption(relative),
                    licence=licence, package=package,
                ))
    return candidates
