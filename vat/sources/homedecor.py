"""Minetest's Home Decor mod (Debian minetest-mod-homedecor): blocky furniture, lamps, kitchen and
bathroom pieces as OBJ (Minetest is Y-up); models are CC-BY-SA-4.0 per the copyright file."""

from __future__ import annotations

import re

from vat.sources.common import Candidate, caption_from_name, package_root, read_copyright, stanza_for

PACKAGE = "minetest-mod-homedecor"
MODS = "usr/share/games/minetest/mods/homedecor"


def homedecor(root: str | None = None) -> list[Candidate]:
    base = package_root(root, PACKAGE)
    stanzas = read_copyright(base / "usr/share/doc" / PACKAGE / "copyright")
    mods = base / MODS
    candidates = []
    for path in sorted(mods.rglob("*.obj")):
        relative = path.relative_to(mods).as_posix()
        stanza = stanza_for(stanzas, relative)
        candidates.append(Candidate(
            id=f"homedecor/{relative}", path=str(path), fmt="obj",
            caption=caption_from_name(re.sub(r"^homedecor_", "", path.stem)),
            licence=stanza.licence if stanza else None, package=PACKAGE,
        ))
    return candidates
