"""0 A.D.'s meshes (Debian 0ad-data: public.zip, art/meshes, CC-BY-SA-3.0): buildings, props
(amphorae, carts, crates, statues, helmets, shields), animals and units, as PMD files that vat's
own reader turns Y-up. Pieces that only make sense on a bigger model (tree trunks and leaves,
building decor and props, scaffolding, pivots, heads) are fragments."""

from __future__ import annotations

import re
import zipfile
from pathlib import PurePosixPath

from vat.sources.common import Candidate, caption_from_name, package_licence, package_root

PACKAGE = "0ad-data"
ARCHIVE = "usr/share/games/0ad/mods/public/public.zip"
FRAGMENTS = (r"trunk|lea(f|ves)|branch|_props?(_|\.|$)|/props/(structural|heads|horse)/|decor|scaffold"
             r"|_struct(_|$)|rubble|_pivot|_found|pieces|antefix|crest|hair|tile|_top$|_base$|foundation"
             r"|shadow|/temp/|/test/")
# Civilisation and world prefixes of 0 A.D. file names: "hele_gate" is a gate.
PREFIXES = re.compile(r"^((athen|brit|cart|celt|gaul|hele|han|iber|kart|kush|mace|maur|pers|ptol|rome|sele|spart"
                      r"|wrld|other|gaia)_)+")


def _caption(member: str) -> str | None:
    stem = PurePosixPath(member).name.split(".")[0]
    return caption_from_name(PREFIXES.sub("", stem)) or caption_from_name(stem)


def zeroad(root: str | None = None) -> list[Candidate]:
    base = package_root(root, PACKAGE)
    archive = base / ARCHIVE
    licence = package_licence(base, PACKAGE)
    with zipfile.ZipFile(archive) as public:
        members = sorted(n for n in public.namelist() if n.startswith("art/meshes/") and n.endswith(".pmd"))
    return [Candidate(id=f"0ad/{member.removesuffix('.dae.cached.pmd').removesuffix('.pmd')}", path=str(archive),
                      member=member, fmt="pmd", caption=_caption(member), licence=licence, package=PACKAGE)
            for member in members]
