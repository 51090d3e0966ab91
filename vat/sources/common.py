"""What every mesh source shares: the Candidate record a source lists, captions cleaned from file
names, licences read from a Debian package's copyright file, and where an unpacked package lives."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vat.data import _caption_from_name

# Z-up (Blender, MD2, AC3D exports of Z-up tools) to vat's Y-up: (x, y, z) -> (x, z, -y), row-major.
Z_UP_TO_Y_UP = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)


@dataclass(frozen=True)
class Candidate:
    """One file (or archive member) that may hold one or more meshes.

    `id` is stable across machines ("ufoai/models/objects/chair/chair.md2"); `path` is the file on
    disk and `member` a file inside it when `path` is a zip archive (.jar, .pk3, .zip); `fmt` is the
    mesh format (the suffix, lower case); `rotation` (row-major 3x3) turns the mesh Y-up;
    `split_nodes` makes every top-level object of the scene its own mesh (Blender files holding
    many props)."""

    id: str
    path: str
    fmt: str
    caption: str | None = None
    licence: str | None = None
    creator: str | None = None
    package: str | None = None
    member: str | None = None
    rotation: tuple[float, ...] | None = None
    split_nodes: bool = False


def package_root(root: str | os.PathLike | None, package: str) -> Path:
    """Where a Debian package's files are: `root`/PACKAGE when packages were unpacked side by side
    with `dpkg-deb -x PKG.deb ROOT/PKG`, else the installed system (/)."""
    return Path(root) / package if root else Path("/")


def words_from_name(name: str) -> str:
    """A file or object name as plain words: "OfficeChair_02.lod1" -> "office chair"."""
    name = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    words = [re.sub(r"(?<=[a-z]{3})\d+$", "", w) for w in re.split(r"[\s_\-.]+", name.lower())]
    noise = re.compile(r"^([a-z]|\d+|lod\d*|v\d+|[a-z]?\d+[a-z]?|hi|lo|low|high|final|new|old|model|mesh|tris|obj)$")
    return " ".join(w for w in words if w and not noise.match(w))


def caption_from_name(name: str) -> str | None:
    """A caption from a file or object name ("office_chair2.md2" -> "an office chair"), None if the
    name has no words."""
    words = words_from_name(name)
    return _caption_from_name(words) if words else None


@dataclass(frozen=True)
class CopyrightStanza:
    patterns: tuple[str, ...]
    licence: str
    copyright: str


def read_copyright(path: str | os.PathLike) -> list[CopyrightStanza]:
    """The Files stanzas of a machine-readable Debian copyright file (DEP-5), in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", Path(path).read_text(encoding="utf-8", errors="replace")):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = [value.strip()]
        if "files" in fields and "license" in fields:
            patterns = tuple(p for line in fields["files"] for p in line.split())
            stanzas.append(CopyrightStanza(patterns, fields["license"][0],
                                           " ".join(fields.get("copyright", [])).strip()))
    return stanzas


def stanza_for(stanzas: list[CopyrightStanza], source_path: str) -> CopyrightStanza | None:
    """The stanza of one file by its path in the source tree: the last matching one wins (DEP-5)."""
    found = None
    for stanza in stanzas:
        if any(fnmatch.fnmatchcase(source_path, p) for p in stanza.patterns):
            found = stanza
    return found


def package_licence(root: Path, package: str) -> str | None:
    """The licence of the package as a whole: its "Files: *" stanza."""
    path = root / "usr/share/doc" / package / "copyright"
    stanza = stanza_for(read_copyright(path), "*") if path.is_file() else None
    return stanza.licence if stanza else None
