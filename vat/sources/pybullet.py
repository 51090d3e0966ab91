"""Whole objects in PyPI pybullet's data folder beyond random_urdfs (zlib licence, like pybullet):
a hand-made list, since most other files there are robot links (parts, not objects)."""

from __future__ import annotations

from pathlib import Path

from vat.data import PYBULLET_LICENCE
from vat.sources.common import Z_UP_TO_Y_UP, Candidate

# file under pybullet_data: (caption, Z-up?)
OBJECTS = {
    "duck.obj": ("a rubber duck", False),
    "bunny.obj": ("a bunny", False),
    "teddy2_VHACD_CHs.obj": ("a teddy bear", False),
    "soccerball.obj": ("a soccer ball", False),
    "samurai_monastry.obj": ("a monastery", False),
    "objects/mug.obj": ("a mug", True),
    "table/table.obj": ("a table", False),
    "table_square/table.obj": ("a square table", False),
    "torus/torus_textured.obj": ("a torus", False),
    "toys/shape_sorter.obj": ("a shape sorter toy", False),
    "toys/concave_box.obj": ("an open box", False),
    "tray/tray_textured.obj": ("a tray", False),
    "domino/domino.obj": ("a domino", False),
    "jenga/jenga.obj": ("a jenga block", False),
    "lego/lego.obj": ("a lego brick", False),
    "kiva_shelf/meshes/pod_lowres.stl": ("a shelving pod", False),
    "sphere_smooth.obj": ("a sphere", False),
}


def pybullet_objects(root: str | None = None) -> list[Candidate]:
    """The listed objects (`root` is ignored: the files come with the installed pybullet package)."""
    import pybullet_data  # a data-only package: importing it loads no simulator

    data = Path(pybullet_data.getDataPath())
    return [
        Candidate(id=f"pybullet-objects/{name}", path=str(data / name), fmt=Path(name).suffix.lstrip("."),
                  caption=caption, licence=PYBULLET_LICENCE, package="pybullet",
                  rotation=Z_UP_TO_Y_UP if z_up else None)
        for name, (caption, z_up) in OBJECTS.items() if (data / name).is_file()
    ]
