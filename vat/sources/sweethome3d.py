"""The default furniture catalogue that ships inside Sweet Home 3D itself (Debian sweethome3d:
sweethome3d.jar, 100 OBJ models by eTeks), named from DefaultFurnitureCatalog.properties."""

from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path

from vat.data import _caption_from_name, catalogue_pieces, read_properties
from vat.sources.common import Candidate, package_root

PACKAGE = "sweethome3d"
JAR = "usr/share/sweethome3d/sweethome3d.jar"
CATALOGUE = "com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties"


def jar_properties(jar: Path) -> dict[str, str]:
    with zipfile.ZipFile(jar) as archive, tempfile.TemporaryDirectory(prefix="vat-sh3d-") as tmp:
        path = Path(tmp) / "catalogue.properties"
        path.write_bytes(archive.read(CATALOGUE))
        return read_properties(path)


def sweethome3d_default(root: str | None = None) -> list[Candidate]:
    """Every model of the default catalogue; modelRotation turns a model upright where it is set."""
    jar = package_root(root, PACKAGE) / JAR
    properties = jar_properties(jar)
    licence = re.sub(r"\s+", " ", properties.get("license", "")).strip() or None
    candidates = []
    for n, model, name, piece, rotation in catalogue_pieces(properties):
        candidates.append(Candidate(
            id=f"sweethome3d-default/{piece}",
            path=str(jar),
            member=model.lstrip("/"),
            fmt=Path(model).suffix.lower().lstrip("."),
            caption=_caption_from_name(name) if name else None,
            licence=licence,
            creator=properties.get(f"creator#{n}"),
            package=PACKAGE,
            rotation=rotation,
        ))
    return candidates
