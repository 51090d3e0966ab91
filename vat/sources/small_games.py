"""Four small Debian game data packages read through assimp: Scorched 3D's tanks (ASE), GL-117's
aircraft and ground targets (3DS), CRRCsim's model aircraft (AC3D) and TORCS's cars (AC3D .acc).
All four come out of assimp Y-up (checked by rendering). Each table row: the package, the folder
under it, the mesh suffixes, which files are parts or scenery (wheels, LODs, terrains), and captions
for file names that do not say what the model is ("gl-14.3ds")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from vat.sources.common import Candidate, caption_from_name, package_licence, package_root, read_copyright, stanza_for


@dataclass(frozen=True)
class GameData:
    package: str
    folder: str  # the game's data folder inside the package
    suffixes: tuple[str, ...]
    fragments: str | None = None
    captions: tuple[tuple[str, str], ...] = ()  # (file name prefix, caption)


GAMES = {
    "scorched3d": GameData("scorched3d-data", "usr/share/games/scorched3d", ("ase",),
                           r"/(accessories|meshes)/|question", (("v2", "a rocket"),)),
    "gl-117": GameData("gl-117-data", "usr/share/games/gl-117", ("3ds",),
                       r"missile|chaff|flare|rubble|aster|egg|mine\d",
                       (("gl-", "a jet fighter"), ("transp", "a transport aircraft"),
                        ("flarak", "a missile launcher"))),
    "crrcsim": GameData("crrcsim-data", "usr/share/games/crrcsim", ("ac",),
                        r"(?i)terrain|populus|woods|freqboard|fireworks"),
    "torcs": GameData("torcs-data", "usr/share/games/torcs", ("acc", "ac"),
                      r"/wheels/|-lod\d|/tracks/|/data/objects/", (("", "a racing car"),)),
}


def _caption(game: GameData, stem: str) -> str | None:
    for prefix, caption in game.captions:
        if stem.lower().startswith(prefix):
            return caption
    return caption_from_name(stem)


def game_candidates(name: str, root: str | None = None) -> list[Candidate]:
    game = GAMES[name]
    base = package_root(root, game.package)
    copyright_path = base / "usr/share/doc" / game.package / "copyright"
    stanzas = read_copyright(copyright_path) if copyright_path.is_file() else []
    fallback = package_licence(base, game.package)
    data = base / game.folder
    candidates = []
    for path in sorted(data.rglob("*")):
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in game.suffixes or not path.is_file():
            continue
        relative = PurePosixPath(path.relative_to(data).as_posix())
        stanza = stanza_for(stanzas, relative.as_posix())
        candidates.append(Candidate(
            id=f"{name}/{relative}", path=str(path), fmt=fmt, caption=_caption(game, path.stem),
            licence=stanza.licence if stanza and stanza.patterns != ("*",) else fallback, package=game.package,
        ))
    return candidates
