"""The MORSE robot simulator's models (Debian morse-simulator-data, BSD-3-clause): Blender files
read through assimp. Prop files hold many objects (IKEA furniture, kitchenware, books): each
top-level object is one mesh. A robot, sensor or actuator file is one model. Environments (whole
rooms and landscapes) are left out."""

from __future__ import annotations

from vat.sources.common import Z_UP_TO_Y_UP, Candidate, caption_from_name, package_licence, package_root

PACKAGE = "morse-simulator-data"
DATA = "usr/share/morse/data"
SPLIT_FOLDERS = ("props",)
WHOLE_FOLDERS = ("robots", "sensors", "actuators")


def morse(root: str | None = None) -> list[Candidate]:
    base = package_root(root, PACKAGE)
    licence = package_licence(base, PACKAGE)
    candidates = []
    for folder in SPLIT_FOLDERS + WHOLE_FOLDERS:
        for path in sorted((base / DATA / folder).glob("*.blend")):
            candidates.append(Candidate(
                id=f"morse/{folder}/{path.name}", path=str(path), fmt="blend",
                caption=caption_from_name(path.stem), licence=licence, package=PACKAGE,
                rotation=Z_UP_TO_Y_UP, split_nodes=folder in SPLIT_FOLDERS,
            ))
    return candidates
