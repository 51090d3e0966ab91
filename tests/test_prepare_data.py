"""train/prepare_data.py end to end on a small folder with good and deliberately bad meshes."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from vat import data
from vat.geometry.io import export_mesh
from vat.geometry.procedural import random_shape

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "prepare_data.py"
SMALL = ["--surface-points", "128", "--uniform-queries", "200", "--near-queries", "200", "--chunk-size", "2"]
BAD = {"not_a_mesh.obj", "empty.stl", "nan_vertices.obj"}


prepare_data = load_script("prepare_data")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    export_mesh(random_shape(1).mesh, root / "a.obj")
    export_mesh(random_shape(2).mesh, root / "nested" / "b.ply")
    export_mesh(random_shape(3).mesh, root / "nested" / "c.stl")
    (root / "not_a_mesh.obj").write_text("this is not a mesh\n")
    (root / "empty.stl").write_bytes(b"")
    (root / "nan_vertices.obj").write_text("v nan nan nan\nv 1 0 0\nv 0 nan 1\nf 1 2 3\n")
    (root / "notes.txt").write_text("ignored: not a mesh suffix")
    return root


@pytest.fixture(scope="module")
def prepared(meshes, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    summary = prepare_data.main(["--out", str(out), "--meshes", str(meshes), "--procedural", "2",
                                 "--workers", "1", *SMALL])
    return out, summary


def test_shards_hold_good_meshes_and_log_bad_ones(prepared):
    out, summary = prepared
    assert (summary["ok"], summary["bad"]) == (5, 3)
    items = list(data.iter_shards(out))
    assert sorted(i["id"] for i in items) == [
        "a.obj", "nested/b.ply", "nested/c.stl", "procedural/000000000", "procedural/000000001"]
    errors = [json.loads(line) for line in (out / "errors-s0000-of-0001.jsonl").read_text().splitlines()]
    assert {e["id"] for e in errors} == BAD
    assert all(e["error"] for e in errors)
    manifest = json.loads((out / "manifest-s0000-of-0001.json").read_text())
    assert manifest["ok"] == 5 and manifest["bad"] == 3 and len(manifest["chunks"]) == 4


def test_samples_have_the_promised_shapes_and_consistent_labels(prepared):
    out, _ = prepared
    for item in data.iter_shards(out):
        assert item["surface_points"].shape == item["surface_normals"].shape == (128, 3)
        assert item["query_points"].shape == (400, 3)
        assert np.abs(item["surface_points"]).max() <= 0.5 + 1e-3
        assert np.abs(item["query_points"][:200]).max() <= 0.55
        occupancy, sdf = item["query_occupancy"].astype(np.float32), item["query_sdf"]
        assert occupancy.min() >= 0 and occupancy.max() <= 1
        assert np.all(occupancy[sdf < 0] >= 0.5) and np.all(occupancy[sdf > 0] <= 0.5)
        assert 0 < (sdf < 0).mean() < 1
        if item["source"] == "procedural":
            assert item["caption"] and item["watertight"] and item["licence"]
    dataset = data.ShardDataset(out)
    assert len(dataset) == 5 and dataset[4]["id"] == dataset.records[4]["id"]


def test_rerun_skips_complete_chunks(prepared, meshes):
    out, _ = prepared
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    summary = prepare_data.main(["--out", str(out), "--meshes", str(meshes), "--procedural", "2",
                                 "--workers", "1", *SMALL])
    assert summary["this_run"]["ok"] == summary["this_run"]["bad"] == 0
    assert summary["this_run"]["chunks_skipped"] == 4 and summary["ok"] == 5
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    with pytest.raises(SystemExit, match="choose another --out"):  # other sample counts, same folder
        prepare_data.main(["--out", str(out), "--meshes", str(meshes), "--workers", "1", *SMALL,
                           "--surface-points", "64"])


def test_shards_partition_items_and_reproduce_samples(prepared, meshes, tmp_path):
    full = {i["id"]: i for i in data.iter_shards(prepared[0])}
    parts = []
    for index in (0, 1):
        out = tmp_path / str(index)
        prepare_data.main(["--out", str(out), "--meshes", str(meshes), "--procedural", "2", "--workers", "1",
                           "--num-shards", "2", "--shard-index", str(index), *SMALL])
        records = [r for p in data.list_chunks(out) for r in data.chunk_records(p)]
        parts.append({r["id"] for r in records})
        for item in data.iter_shards(out):  # seeded by id: same samples whichever shard made them
            np.testing.assert_array_equal(item["query_sdf"], full[item["id"]]["query_sdf"])
    assert not parts[0] & parts[1]
    assert parts[0] | parts[1] == set(full) | BAD


def test_sweethome3d_names_licences_and_holdout(tmp_path):
    catalogues = tmp_path / "furniture"
    catalogues.mkdir()
    obj = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
    for library in ("KatorLegaz", "Other"):
        folder = library.lower()
        properties = (f"license=CC-BY {library}\n"
                      f"id#1={library}#chair\nname#1=Chair\nmodel#1=/{folder}/chair.obj\ncreator#1=Someone\n"
                      f"id#2={library}#books\nname#2=B\\u00fccher \\\n  set of books\nmodel#2=/{folder}/b.obj\n"
                      "modelRotation#2=1 0 0 0 0 1 0 -1 0\n")
        with zipfile.ZipFile(catalogues / f"{library}.sh3f", "w") as archive:
            archive.writestr("PluginFurnitureCatalog.properties", properties.encode("latin-1"))
            archive.writestr(f"{folder}/chair.obj", obj)
            archive.writestr(f"{folder}/b.obj", obj)
    items = data.sweethome3d_items(catalogues, tmp_path / "cache")
    by_id = {i.id: i for i in items}
    chair = by_id["sweethome3d/KatorLegaz/chair"]
    assert (chair.caption, chair.licence, chair.split) == ("a chair", "CC-BY KatorLegaz", "heldout")
    assert chair.extra["creator"] == "Someone" and Path(chair.path).is_file()
    books = by_id["sweethome3d/Other/books"]
    assert books.split == "train" and books.extra["name"] == "Bücher set of books"
    assert books.rotation == (1, 0, 0, 0, 0, 1, 0, -1, 0)
    mesh, _ = data.load_item_mesh(books)
    assert mesh.bounds[0, 2] == pytest.approx(-1.0)  # the catalogue's rotation took y to -z

    out = tmp_path / "heldout"
    summary = prepare_data.main(["--out", str(out), "--sweethome3d", "--sweethome3d-dir", str(catalogues),
                                 "--cache-dir", str(tmp_path / "cache"), "--split", "heldout", "--workers", "1",
                                 *SMALL])
    assert summary["ok"] == 2
    assert {i["library"] for i in data.iter_shards(out)} == {"KatorLegaz"}


def test_script_runs_with_two_workers(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--procedural", "4", "--workers", "2", *SMALL],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(list(data.iter_shards(tmp_path))) == 4


def test_export_meshes_writes_the_prepared_shapes_oriented(prepared, tmp_path):
    """train/export_meshes.py: each good shape once, as prepared (same bounding box), PLY or GLB."""
    import trimesh

    from vat.geometry.io import load_mesh, normalization_transform

    export_meshes = load_script("export_meshes")
    shards, _ = prepared
    records = [r for r in data.iter_shards(shards)]
    counts = export_meshes.main(["--data", str(shards), "--out", str(tmp_path / "ply")])
    assert counts == {"written": len(records), "kept": 0, "bad": 0}
    for record in records:
        path = tmp_path / "ply" / export_meshes.file_name(record["id"], ".ply")
        np.testing.assert_allclose(normalization_transform(load_mesh(path)), record["normalization"], atol=1e-5)
    assert export_meshes.main(["--data", str(shards), "--out", str(tmp_path / "ply")])["kept"] == len(records)
    export_meshes.main(["--data", str(shards), "--out", str(tmp_path / "glb"), "--textured", "--limit", "1"])
    (glb,) = (tmp_path / "glb").iterdir()
    assert glb.suffix == ".glb" and len(trimesh.load(glb, force="mesh").faces) > 0
    assert export_meshes.file_name("sweethome3d/KatorLegaz/a b", ".ply") == "sweethome3d_KatorLegaz_a_b.ply"


def test_validation_split_is_a_stable_share_of_ids():
    ids = [f"sweethome3d/Library/piece{i}" for i in range(6000)]
    chosen = [i for i in ids if data.in_validation(i)]
    assert abs(len(chosen) / len(ids) - data.VALIDATION_SHARE) < 0.015
    assert chosen == [i for i in ids if data.in_validation(i)]  # the same every time (a hash, no random state)
    assert sum(data.in_validation(i, share=0.5) for i in ids) / len(ids) == pytest.approx(0.5, abs=0.03)
    assert not any(data.in_validation(i, share=0.0) for i in ids)


def test_export_meshes_of_the_validation_split_only(prepared, tmp_path, monkeypatch):
    export_meshes = load_script("export_meshes")
    shards, _ = prepared
    records = list(data.iter_shards(shards))
    monkeypatch.setattr(data, "in_validation", lambda shape_id: shape_id == records[-1]["id"])
    assert export_meshes.main(["--data", str(shards), "--out", str(tmp_path / "val"), "--validation"])["written"] == 1
    assert [p.name for p in (tmp_path / "val").iterdir()] == [export_meshes.file_name(records[-1]["id"], ".ply")]
    monkeypatch.setattr(data, "in_validation", lambda shape_id: False)
    with pytest.raises(SystemExit, match="no shapes of the validation split"):
        export_meshes.main(["--data", str(shards), "--out", str(tmp_path / "none"), "--validation"])


def test_export_meshes_applies_the_catalogue_rotation(tmp_path):
    export_meshes = load_script("export_meshes")
    catalogues = tmp_path / "furniture"
    catalogues.mkdir()
    obj = "v 0 0 0\nv 1 0 0\nv 0 2 0\nv 0 0 3\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
    properties = "id#1=Other#b\nname#1=B\nmodel#1=/other/b.obj\nmodelRotation#1=1 0 0 0 0 1 0 -1 0\n"
    with zipfile.ZipFile(catalogues / "Other.sh3f", "w") as archive:
        archive.writestr("PluginFurnitureCatalog.properties", properties.encode("latin-1"))
        archive.writestr("other/b.obj", obj)
    prepare_data.main(["--out", str(tmp_path / "shards"), "--sweethome3d", "--sweethome3d-dir", str(catalogues),
                       "--cache-dir", str(tmp_path / "cache"), "--workers", "1", *SMALL])
    for flags, suffix in (([], ".ply"), (["--textured"], ".glb")):
        export_meshes.main(["--data", str(tmp_path / "shards"), "--out", str(tmp_path / suffix[1:]), *flags])
        from vat.geometry.io import load_mesh

        mesh = load_mesh(tmp_path / suffix[1:] / f"sweethome3d_Other_b{suffix}")
        np.testing.assert_allclose(mesh.extents, [1, 3, 2], atol=1e-6)  # y and z swapped by the rotation


# ---------------------------------------------------------------------------- object families and augmentation


def test_validation_follows_the_base_id_of_augmented_copies():
    ids = [f"sweethome3d/Library/piece{i}" for i in range(400)]
    assert any(data.in_validation(i) for i in ids) and not all(data.in_validation(i) for i in ids)
    for i in ids:
        assert data.base_id(f"{i}#aug3") == i
        assert data.in_validation(f"{i}#aug1") == data.in_validation(f"{i}#aug7") == data.in_validation(i)


def test_augmented_copies_are_deterministic_and_only_of_real_training_shapes(meshes):
    real = data.folder_items(meshes)
    heldout = data.MeshItem("sweethome3d/KatorLegaz/x", "sweethome3d", path="x.obj", split="heldout")
    items = real + [heldout] + data.procedural_items(2) + data.family_items(1)
    copies = data.augmented_items(items, 2)
    assert copies == data.augmented_items(items, 2)  # ids and parameters: the same every time
    kept = [i.id for i in real if not data.in_validation(i.id)]
    assert "nested/b.ply" not in kept and "a.obj" in kept  # b.ply is in the validation split
    assert [c.id for c in copies] == [f"{i}#aug{k}" for i in kept for k in (1, 2)]
    for copy in copies:
        base = copy.extra["augment_of"]
        assert copy.id.startswith(base) and copy.path == next(i.path for i in real if i.id == base)
        assert type(copy.extra["augment_mirror"]) is bool  # a plain bool: records are JSON
        assert copy.extra == {**data.augmentation(copy.id), "augment_of": base}
        logs = np.log(copy.extra["augment_scale"])
        assert np.all(np.abs(logs) <= np.log(data.AUGMENT_MAX_SCALE) + 1e-12)
        assert abs(logs.mean()) < 0.05 and np.ptp(logs) > 0.01  # anisotropic, about volume-preserving
    assert len({tuple(c.extra["augment_scale"]) for c in copies}) == len(copies)
    assert {c.extra["augment_mirror"] for c in copies} == {True, False}  # mirrored about half the time


def test_augmented_mesh_is_the_original_scaled_and_mirrored(meshes):
    item = data.MeshItem("a.obj", "folder", path=str(meshes / "a.obj"), caption="a shape")
    base, _ = data.load_item_mesh(item)
    copies = data.augmented_items([item], 12)
    assert {c.extra["augment_mirror"] for c in copies} == {True, False}
    for copy in copies:
        mesh, caption = data.load_item_mesh(copy)
        scale = np.array(copy.extra["augment_scale"])
        signed = scale * ([-1, 1, 1] if copy.extra["augment_mirror"] else 1)
        assert caption == "a shape"
        np.testing.assert_allclose(mesh.vertices, base.vertices * signed, atol=1e-12)
        np.testing.assert_allclose(mesh.extents, base.extents * scale, rtol=1e-9)
        # Faces still wind outwards after a mirror: the volume is positive, scaled by the factors.
        assert mesh.volume == pytest.approx(base.volume * scale.prod(), rel=1e-9) and mesh.volume > 0


def test_prepare_families_and_augmented_copies(meshes, tmp_path):
    from vat.training.renders import oriented_mesh
    from vat.geometry.families import FAMILIES

    summary = prepare_data.main(["--out", str(tmp_path), "--meshes", str(meshes), "--families", "1",
                                 "--augment", "1", "--workers", "1", *SMALL])
    records = [r for p in data.list_chunks(tmp_path) for r in data.chunk_records(p)]
    real = [i.id for i in data.folder_items(meshes)]
    augmented = [f"{i}#aug1" for i in real if not data.in_validation(i)]
    assert sorted(r["id"] for r in records) == sorted(real + augmented + [f"family/{f}/000000000" for f in FAMILIES])
    assert summary["sources"]["families_per_family"] == 1 and summary["sources"]["augment_copies"] == 1
    good = {r["id"]: r for r in records if r["ok"]}
    assert {"a.obj#aug1", "nested/c.stl#aug1"} <= set(good)
    for record in good.values():
        if record["source"] == data.FAMILY_SOURCE:
            assert record["licence"] == "CC0-1.0" and record["caption"] and record["watertight"]
        # Every record rebuilds its mesh (a check of the bounding box against the stored normalisation).
        mesh = oriented_mesh(record, textured=False)
        if "augment_of" in record:
            original = oriented_mesh(good[record["augment_of"]], textured=False)
            np.testing.assert_allclose(mesh.extents, original.extents * record["augment_scale"], rtol=1e-9)


def test_augment_only_writes_just_the_copies(meshes, tmp_path):
    prepare_data.main(["--out", str(tmp_path), "--meshes", str(meshes), "--augment", "1", "--augment-only",
                       "--workers", "1", *SMALL])
    ids = sorted(r["id"] for p in data.list_chunks(tmp_path) for r in data.chunk_records(p))
    assert ids == sorted(f"{i.id}#aug1" for i in data.folder_items(meshes) if not data.in_validation(i.id))
    with pytest.raises(SystemExit):
        prepare_data.parse_args(["--out", str(tmp_path), "--meshes", str(meshes), "--augment-only"])


def test_split_validation_writes_the_validation_shapes_alone(tmp_path):
    """--split validation: exactly the training items that vat.data.in_validation puts in the validation split."""
    expected = sorted(i.id for i in data.procedural_items(40) if data.in_validation(i.id))
    assert 0 < len(expected) < 40
    summary = prepare_data.main(["--out", str(tmp_path), "--procedural", "40", "--split", "validation",
                                 "--workers", "1", *SMALL])
    assert summary["ok"] == len(expected)
    assert sorted(r["id"] for r in data.iter_shards(tmp_path)) == expected
