"""UFO: Alien Invasion's models (Debian ufoai-data: base/0models.pk3, a zip of MD2 files), each
file's licence and authors from the package's machine-readable copyright file."""

from __future__ import annotations

import zipfile
from pathlib import PurePosixPath

from vat.sources.common import Candidate, caption_from_name, package_root, read_copyright, stanza_for

PACKAGE = "ufoai-data"
ARCHIVE = "usr/share/games/ufoai/base/0models.pk3"
# Parts of a bigger model (trees' leaves, aircraft's gear and hulls, container doors, heads of
# soldiers whose bodies are separate files) and wrecks that repeat an intact model.
FRAGMENTS = (r"_leaves|_trunk|_bark|/head|_head|_gear|_engines?(_|\.)|_wings|_upper|_hull|_int(_|\.)"
             r"|_door|door(left|right)|/crash_|_crashed|/disassembled/|_flying|_folded|_low\.")


def _caption(member: str) -> str | None:
    path = PurePosixPath(member)
    words = caption_from_name(path.stem)
    if words is None or len(path.stem) < 3:
        words = caption_from_name(path.parent.name)
    return words


def ufoai(root: str | None = None) -> list[Candidate]:
    """Every .md2 in 0models.pk3 (frame 0 of animated ones)."""
    base = package_root(root, PACKAGE)
    archive = base / ARCHIVE
    copyright_path = base / "usr/share/doc" / PACKAGE / "copyright"
    stanzas = read_copyright(copyright_path) if copyright_path.is_file() else []
    with zipfile.ZipFile(archive) as pk3:
        members = sorted(n for n in pk3.namelist() if n.lower().endswith(".md2"))
    candidates = []
    for member in members:
        stanza = stanza_for(stanzas, f"base/{member}")
        candidates.append(Candidate(
            id=f"ufoai/{member}", path=str(archive), member=member, fmt="md2", caption=_caption(member),
            licence=stanza.licence if stanza else None,
            # A stanza names one file's authors only when it is short; long ones list the team.
            creator=stanza.copyright if stanza and 0 < len(stanza.copyright) <= 60 else None,
            package=PACKAGE,
        ))
    return candidates
