"""Measurements behind `vat bench`: coarse-to-fine against dense mesh extraction on the analytic
bench shape (queries, seconds, and the Chamfer-L1 difference of the two meshes)."""

from __future__ import annotations

from vat.geometry.analytic import bench_shape_sdf
from vat.geometry.extract import extract_mesh
from vat.metrics import chamfer_fscore


def bench_extraction(resolution: int = 256, coarse_resolution: int = 32) -> dict:
    """Extract the bench shape densely and coarse-to-fine at `resolution`; the ratios are dense
    over coarse-to-fine, the Chamfer difference is the protocol's Chamfer-L1 between the meshes."""
    sdf = bench_shape_sdf()

    def occupancy(points):
        return -sdf(points)

    dense_mesh, dense = extract_mesh(occupancy, resolution, method="dense")
    c2f_mesh, c2f = extract_mesh(
        occupancy, resolution, method="coarse_to_fine", coarse_resolution=coarse_resolution
    )
    return {
        "extract_query_ratio": dense.queries / c2f.queries,
        "extract_chamfer_diff": chamfer_fscore(dense_mesh, c2f_mesh)["chamfer"],
        "extract_time_ratio": dense.seconds / c2f.seconds,
        "resolution": resolution,
        "coarse_resolution": coarse_resolution,
        "dense_queries": dense.queries,
        "coarse_to_fine_queries": c2f.queries,
        "dense_seconds": dense.seconds,
        "coarse_to_fine_seconds": c2f.seconds,
        "faces": len(c2f_mesh.faces),
    }
