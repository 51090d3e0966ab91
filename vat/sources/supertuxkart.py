"""SuperTuxKart's models (Debian supertuxkart-data): the shared prop library, item models, kart
bodies and track props, as SPM files that vat's own reader turns right-handed (Y-up already).
Licences per file from the package's copyright file."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from vat.sources.common import Candidate, caption_from_name, package_root, read_copyright, stanza_for

PACKAGE = "supertuxkart-data"
DATA = "usr/share/games/supertuxkart/data"
# Level-of-detail and physics copies, the track surfaces themselves, water, sky and invisible walls,
# props that repeat a library model, and effects.
FRAGMENTS = (r"(?i)[_-]lod|[_-]low\b|_low\.|phys|invisible|collision|_track\b|terrain|road|sky|water|_ref\b"
             r"|grass|/tracks/.*stklib_|/library/gfx_|wheel|headlight|_(fan|led|glow|light|shadow)\b")
LIBRARY_NAME = re.compile(r"^(stklib|hd|gfx)_|_[a-z]$|_main$")


def _caption(relative: PurePosixPath) -> str | None:
    if relative.parts[0] == "library":
        return caption_from_name(LIBRARY_NAME.sub("", LIBRARY_NAME.sub("", relative.parent.name)))
    if relative.parts[0] == "karts":
        return "a kart"
    return caption_from_name(relative.stem)


def _listed(data: Path) -> list[Path]:
    """Library folders give their *_main.spm (or their only .spm); kart folders the body named
    after the kart; items and tracks every .spm."""
    paths = sorted(data.glob("models/*.spm")) + sorted(data.glob("tracks/*/*.spm"))
    for folder in sorted(p for p in (data / "library").glob("*") if p.is_dir()):
        spms = sorted(folder.glob("*.spm"))
        paths += [p for p in spms if p.stem.endswith("_main")] or spms[:1] if len(spms) == 1 or any(
            p.stem.endswith("_main") for p in spms) else []
    paths += [p for p in sorted(data.glob("karts/*/*.spm")) if p.stem.lower() == p.parent.name.lower()]
    return paths


def supertuxkart(root: str | None = None) -> list[Candidate]:
    base = package_root(root, PACKAGE)
    stanzas = read_copyright(base / "usr/share/doc" / PACKAGE / "copyright")
    data = base / DATA
    candidates = []
    for path in _listed(data):
        relative = PurePosixPath(path.relative_to(data).as_posix())
        stanza = stanza_for(stanzas, f"data/{relative}")
        candidates.append(Candidate(
            id=f"supertuxkart/{relative}", path=str(path), fmt="spm", caption=_caption(relative),
            licence=stanza.licence if stanza else None, package=PACKAGE,
        ))
    return candidates
