"""Stage-2 data of one shape: its mesh reloaded from a shard record of train/prepare_data.py, oriented as it
was prepared, and its renders framed as an input image is at generation time, with their masks."""

from __future__ import annotations

import numpy as np

from vat import data
from vat.errors import VatError


def item_from_record(record: dict) -> data.MeshItem:
    """The MeshItem a shard record was prepared from (what vat.data.load_item_mesh needs)."""
    extra = {key: record[key] for key in data.REBUILD_KEYS if key in record}
    rotation = record.get("rotation")
    return data.MeshItem(id=record["id"], source=record["source"], path=record.get("path"),
                         caption=record.get("caption"), licence=record.get("licence"),
                         split=record.get("split", "train"), rotation=tuple(rotation) if rotation else None,
                         extra=extra)


def oriented_mesh(record: dict, textured: bool = True):
    """The record's mesh as prepared, before normalisation: with `textured` a file is read with its
    materials (vat.geometry.render.load_for_render, a Scene), else as geometry (a Trimesh); the
    catalogue rotation is applied. It must have the prepared shape's bounding box (VatError), so
    renders and tokens show the same object."""
    from vat.geometry.io import normalization_transform
    from vat.geometry.render import load_for_render

    item = item_from_record(record)
    if item.path is None or not textured:
        mesh, _ = data.load_item_mesh(item)
    else:
        mesh = load_for_render(item.path)
        matrix = data.item_transform(item)  # the catalogue rotation, an augmented copy's scale and mirror
        if matrix is not None:
            mesh.apply_transform(matrix)
    if not np.allclose(normalization_transform(mesh), record["normalization"], rtol=1e-4, atol=1e-6):
        raise VatError("the reloaded mesh is not the prepared one (its bounding box differs): "
                       "was the file changed, or its rotation not recorded?")
    return mesh


Rendered = tuple[np.ndarray, np.ndarray]  # (uint8 views [V, S, S, 3], uint8 masks [V, S, S]) of one shape


def render_record(record: dict, views: int, size: int) -> tuple[Rendered | None, str | None]:
    """((views on white, masks), None), or (None, error) for a bad shape. Files are rendered with
    their materials (oriented_mesh); each view is framed by vat.preprocess.preprocess_image from its
    alpha, as `vat generate` frames an input image, so training sees what generation will."""
    from vat.geometry.render import render_views
    from vat.preprocess import preprocess_image

    try:
        framed = [preprocess_image(view.rgba, size=size)
                  for view in render_views(oriented_mesh(record), views, size, seed=record["seed"])]
        return (np.stack([np.asarray(f.image) for f in framed]),
                np.stack([np.rint(f.mask * 255.0).astype(np.uint8) for f in framed])), None
    except Exception as exc:  # one bad mesh must not stop a run over many
        return None, f"{type(exc).__name__}: {exc}"


def render_task(task: tuple[dict, int, int]) -> tuple[Rendered | None, str | None]:
    return render_record(*task)
