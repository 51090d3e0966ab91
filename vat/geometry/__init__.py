"""Geometry: mesh io and normalisation (io.py), game mesh formats (formats.py), inside/outside (inside.py),
sampling (sampling.py), procedural shapes (procedural.py, analytic.py, families/), mesh extraction (extract.py),
rendering on the paper's cameras (render.py, cameras.py, drawable.py) and outlines (silhouette.py).

Coordinate convention everywhere: a normalised shape has its bounding box centred at the origin
and its longest side equal to 1, i.e. it lies in the unit cube [-0.5, 0.5]^3. Signed distances
are negative inside, positive outside; occupancy is 1 inside.
"""

from vat.geometry.io import (
    EXPORT_FORMATS,
    LOAD_FORMATS,
    export_mesh,
    load_mesh,
    load_scene,
    normalization_transform,
    normalize_mesh,
)
from vat.geometry.inside import signed_distance, unsigned_distance, winding_number
from vat.geometry.sampling import (
    SEMI_CONTINUOUS_BAND,
    near_surface_points,
    occupancy_queries,
    sample_surface,
    semi_continuous_occupancy,
    uniform_points,
)

__all__ = [
    "EXPORT_FORMATS",
    "LOAD_FORMATS",
    "SEMI_CONTINUOUS_BAND",
    "export_mesh",
    "load_mesh",
    "load_scene",
    "near_surface_points",
    "normalization_transform",
    "normalize_mesh",
    "occupancy_queries",
    "sample_surface",
    "semi_continuous_occupancy",
    "signed_distance",
    "uniform_points",
    "unsigned_distance",
    "winding_number",
]
