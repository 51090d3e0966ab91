"""Red Eclipse's map models (Debian redeclipse-data): office props, barrels, lamps, plants. Files
sit in one folder per artist (the creator); OBJ is Y-up, IQM/MD5/MD3 are Z-up like the engine
(read through assimp). Player models, weapons, projectiles and the player's "vanities" (hats and
gear posed for a bone, not upright) are left out."""

from __future__ import annotations

from pathlib import PurePosixPath

from vat.sources.common import Z_UP_TO_Y_UP, Candidate, caption_from_name, package_root, read_copyright, stanza_for

PACKAGE = "redeclipse-data"
DATA = "usr/share/games/redeclipse/data"
FORMATS = {"obj": None, "iqm": Z_UP_TO_Y_UP, "md5mesh": Z_UP_TO_Y_UP, "md3": Z_UP_TO_Y_UP}
NOT_MAPMODELS = ("actors", "weapons", "projectiles", "vanities", "particles", "textures", "skyboxes", "maps")
# Animation-only IQM files beside a door's mesh, and the mirrored copies some models keep in flip/.
FRAGMENTS = r"_(open|close|idle)\.iqm$|/flip/"


def _caption(relative: PurePosixPath) -> str | None:
    for name in (relative.stem, relative.parent.name, relative.parent.parent.name):
        caption = caption_from_name(name)
        if caption:
            return caption
    return None


def redeclipse(root: str | None = None) -> list[Candidate]:
    base = package_root(root, PACKAGE)
    stanzas = read_copyright(base / "usr/share/doc" / PACKAGE / "copyright")
    data = base / DATA
    candidates = []
    for path in sorted(data.rglob("*")):
        fmt = path.suffix.lower().lstrip(".")
        relative = PurePosixPath(path.relative_to(data).as_posix())
        if fmt not in FORMATS or relative.parts[0] in NOT_MAPMODELS or not path.is_file():
            continue
        stanza = stanza_for(stanzas, f"data/{relative}")
        candidates.append(Candidate(
            id=f"redeclipse/{relative}", path=str(path), fmt=fmt, caption=_caption(relative),
            licence=stanza.licence if stanza else None, creator=relative.parts[0], package=PACKAGE,
            rotation=FORMATS[fmt],
        ))
    return candidates
