"""Mesh sources (vat.sources) and train/collect_meshes.py on a fake package tree the tests make:
licences from a Debian copyright file, filters (too few faces, flat cards, fragments), exact and
near duplicates, scattered pieces, per-object splitting of a scene, resuming, and prepare_data --collected."""

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import load_script

from vat import data
from vat.sources import SOURCES, Source
from vat.sources.common import Z_UP_TO_Y_UP, Candidate, caption_from_name, package_licence, read_copyright, stanza_for
from vat.sources.dedupe import find_duplicates, geometry_hash, shape_descriptor
from vat.sources.load import load_parts
from vat.sources.sweethome3d import sweethome3d_default

collect = load_script("collect_meshes")
prepare_data = load_script("prepare_data")

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2020 Game Team
License: GPL-2+

Files: models/special/*
Copyright: Jane Doe
License: CC0-1.0
 Public domain dedication.
"""


def _lamp() -> trimesh.Trimesh:
    """A lamp-like stack (cylinder on a sphere), Y-up, a few hundred faces."""
    stand = trimesh.creation.cylinder(radius=0.05, height=1.0, sections=32)
    stand.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    base = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    base.apply_translation([0, -0.5, 0])
    return trimesh.util.concatenate([stand, base])


def _fake_package(root: Path) -> Path:
    """ROOT/fakepkg: a copyright file and OBJ files with every case the collector must handle."""
    package = root / "fakepkg"
    models = package / "usr/share/fakegame/models"
    (package / "usr/share/doc/fakepkg").mkdir(parents=True)
    (package / "usr/share/doc/fakepkg/copyright").write_text(COPYRIGHT)
    sphere = trimesh.creation.icosphere(subdivisions=2)  # 320 faces
    lamp = _lamp()
    livery = trimesh.Trimesh(lamp.vertices[::-1], (len(lamp.vertices) - 1 - lamp.faces)[::-1], process=False)
    rng = np.random.default_rng(0)
    lod = trimesh.Trimesh(sphere.vertices * (1 + 0.004 * rng.standard_normal((len(sphere.vertices), 1))),
                          sphere.faces)
    card = trimesh.creation.box([1.0, 1.0, 0.001])
    card = card.subdivide().subdivide().subdivide()  # 768 faces, but flat
    crates = trimesh.util.concatenate([trimesh.creation.icosphere(subdivisions=1).apply_translation([6 * i, 0, 0])
                                       for i in range(6)])  # six pieces far apart: a decor set
    meshes = {
        "crates_group.obj": crates,
        "special/ball.obj": sphere, "lamp.obj": lamp, "lamp_red.obj": livery, "special/ball_lod1.obj": lod,
        "poster.obj": card, "tiny.obj": trimesh.creation.box(), "tree_leaves.obj": trimesh.creation.icosphere(),
    }
    for name, mesh in meshes.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        mesh.export(models / name)
    (models / "broken.obj").write_text("not a mesh\n")
    return package


def _fake_candidates(root: str | None) -> list[Candidate]:
    package = Path(root) / "fakepkg"
    models = package / "usr/share/fakegame/models"
    stanzas = read_copyright(package / "usr/share/doc/fakepkg/copyright")
    candidates = []
    for path in sorted(models.rglob("*.obj")):
        relative = path.relative_to(models).as_posix()
        candidates.append(Candidate(id=f"fake/{relative}", path=str(path), fmt="obj", package="fakepkg",
                                    caption=caption_from_name(path.stem),
                                    licence=stanza_for(stanzas, f"models/{relative}").licence))
    return candidates


FAKE = Source(_fake_candidates, ("fakepkg",), fragments=r"_leaves")


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("debs")
    _fake_package(root)
    out = tmp_path_factory.mktemp("collected")
    summary = collect.collect_source("fake", FAKE, out, str(root), workers=1, limit=None)
    return root, out, summary


def _records(out: Path, source: str = "fake") -> dict[str, dict]:
    return {r["id"]: r for r in collect.read_index(out / source / "index.jsonl")}


def test_copyright_licences_follow_dep5(tmp_path):
    package = _fake_package(tmp_path)
    stanzas = read_copyright(package / "usr/share/doc/fakepkg/copyright")
    assert stanza_for(stanzas, "models/special/ball.obj").licence == "CC0-1.0"
    assert stanza_for(stanzas, "models/special/ball.obj").copyright == "Jane Doe"
    assert stanza_for(stanzas, "models/lamp.obj").licence == "GPL-2+"
    assert package_licence(package, "fakepkg") == "GPL-2+"


def test_captions_are_cleaned_file_names():
    assert caption_from_name("OfficeChair_02.lod1") == "an office chair"
    assert caption_from_name("woodern_plank2.md2") == "a woodern plank"
    assert caption_from_name("12") is None


def test_collect_filters_and_marks_duplicates(collected):
    _, out, summary = collected
    records = _records(out)
    status = {i.split("/", 1)[1]: (r["status"], r.get("reason"), r["duplicate_of"]) for i, r in records.items()}
    assert status["tree_leaves.obj"] == ("filtered", "fragment", None)
    assert status["poster.obj"][:2] == ("filtered", "flat")
    assert status["tiny.obj"][:2] == ("filtered", "fewer than 100 faces")
    assert status["broken.obj"][0] == "failed"
    assert status["crates_group.obj"][:2] == ("filtered", "scattered pieces")
    assert status["lamp.obj"] == ("kept", None, None)
    assert status["lamp_red.obj"][2] == "fake/lamp.obj"  # the same geometry, reordered: exact
    assert records["fake/lamp_red.obj"]["hash"] == records["fake/lamp.obj"]["hash"]
    assert status["special/ball_lod1.obj"][2] == "fake/special/ball.obj"  # perturbed: near, not exact
    assert records["fake/special/ball_lod1.obj"]["hash"] != records["fake/special/ball.obj"]["hash"]
    assert records["fake/special/ball.obj"]["licence"] == "CC0-1.0"
    assert records["fake/lamp.obj"]["licence"] == "GPL-2+"
    assert (summary["kept"], summary["duplicates"], summary["filtered"], summary["failed"]) == (2, 2, 4, 1)
    assert summary["complete"] and json.loads((out / "fake/summary.json").read_text()) == summary
    mesh = trimesh.load(out / "fake" / records["fake/lamp.obj"]["file"], force="mesh")
    assert len(mesh.faces) == records["fake/lamp.obj"]["faces"]


def test_different_shapes_are_not_duplicates():
    shapes = [_lamp(), trimesh.creation.icosphere(subdivisions=2), trimesh.creation.box([1, 0.5, 0.25]),
              trimesh.creation.box([1, 0.5, 0.05])]  # a thin slab differs from a box in thickness only
    records = []
    for i, mesh in enumerate(shapes):
        occupancy, extents = shape_descriptor(mesh)
        records.append({"id": str(i), "hash": geometry_hash(mesh), "occupancy": occupancy, "extents": extents})
    assert find_duplicates(records) == {}
    assert find_duplicates(records + [dict(records[1], id="again")]) == {"again": "1"}


def test_collect_resumes_and_skips_complete_sources(tmp_path):
    root = tmp_path / "debs"
    _fake_package(root)
    out = tmp_path / "out"
    first = collect.collect_source("fake", FAKE, out, str(root), workers=1, limit=3)
    assert not first["complete"] and first["files_done"] == 3
    second = collect.collect_source("fake", FAKE, out, str(root), workers=2, limit=None)  # the pool path
    assert second["complete"] and second["files_done"] == second["files"] == 9
    ids = [r["id"] for r in collect.read_index(out / "fake/index.jsonl")]
    assert len(ids) == len(set(ids)) == 9
    assert collect.collect_source("fake", FAKE, out, str(root), workers=1, limit=None) == second


def test_dedupe_across_sources_keeps_the_earlier_source(collected, tmp_path):
    root, out, _ = collected
    lamp = str(root / "fakepkg/usr/share/fakegame/models/lamp.obj")
    copy = Source(lambda r: [Candidate(id="other/lamp.obj", path=lamp, fmt="obj", package="fakepkg")], ("fakepkg",))
    collect.collect_source("other", copy, out, str(root), workers=1, limit=None)
    result = collect.dedupe_all(out)
    assert result["sources"] == ["fake", "other"]
    assert _records(out, "other")["other/lamp.obj"]["duplicate_of"] == "fake/lamp.obj"
    assert json.loads((out / "other/summary.json").read_text())["duplicates"] == 1


def test_split_nodes_gives_one_mesh_per_object(tmp_path):
    scene = trimesh.Scene()
    scene.graph.update(frame_to="<BlenderRoot>", frame_from=scene.graph.base_frame)
    for name, offset in (("chair", 0.0), ("table", 3.0)):
        offset_matrix = trimesh.transformations.translation_matrix([offset, 0, 0])
        scene.graph.update(frame_to=name, frame_from="<BlenderRoot>", matrix=offset_matrix)
        for part in range(2):  # assimp splits an object by material into child nodes
            mesh = trimesh.creation.box([1, 1, 2 + part])
            scene.add_geometry(mesh, node_name=f"{name}_{part}", geom_name=f"{name}_{part}", parent_node_name=name)
    path = tmp_path / "scene.glb"
    scene.export(path)
    parts = load_parts(Candidate(id="x", path=str(path), fmt="glb", split_nodes=True, rotation=Z_UP_TO_Y_UP))
    assert [name for name, _ in parts] == ["chair", "table"]
    chair = parts[0][1]
    assert len(chair.faces) == 24
    assert np.allclose(chair.extents, [1, 3, 1])  # Z-up height 3 is now along Y


def test_sweethome3d_default_reads_the_catalogue_inside_the_jar(tmp_path):
    jar = tmp_path / "sweethome3d/usr/share/sweethome3d/sweethome3d.jar"
    jar.parent.mkdir(parents=True)
    properties = ("license=GNU GPL / CC-BY 3.0 \u00a9 eTeks\n"
                  "id#1=eTeks#chair\nname#1=Chair\nmodel#1=/com/eteks/sweethome3d/io/resources/chair.obj\n"
                  "creator#1=eTeks\nmodelRotation#1=1 0 0 0 0 1 0 -1 0\n")
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr("com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties", properties.encode("latin-1"))
        archive.writestr("com/eteks/sweethome3d/io/resources/chair.obj",
                         trimesh.creation.box([1, 1, 2]).export(file_type="obj"))
    [candidate] = sweethome3d_default(str(tmp_path))
    assert (candidate.id, candidate.caption, candidate.creator) == ("sweethome3d-default/chair", "a chair", "eTeks")
    assert candidate.licence == "GNU GPL / CC-BY 3.0 \u00a9 eTeks"
    [(_, mesh)] = load_parts(candidate)
    assert np.allclose(mesh.extents, [1, 2, 1])


def test_prepare_data_reads_the_kept_unique_meshes(collected, tmp_path):
    _, out, _ = collected
    items = data.collected_items(out)
    assert sorted(i.id for i in items) == ["fake/lamp.obj", "fake/special/ball.obj"]
    ball = next(i for i in items if i.id == "fake/special/ball.obj")
    assert (ball.caption, ball.licence, ball.extra["package"]) == ("a ball", "CC0-1.0", "fakepkg")
    summary = prepare_data.main(["--out", str(tmp_path / "shards"), "--collected", str(out), "--workers", "1",
                                 "--surface-points", "64", "--uniform-queries", "64", "--near-queries", "64"])
    assert (summary["ok"], summary["bad"]) == (2, 0)
    assert summary["licences"] == ["CC0-1.0", "GPL-2+"]


def _touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fragments(name: str, candidates: list[Candidate]) -> list[str]:
    return [c.id for c in candidates if re.search(SOURCES[name].fragments, c.id)]


def test_ufoai_lists_md2_members_with_per_file_licences(tmp_path):
    package = tmp_path / "ufoai-data"
    _touch(package / "usr/share/doc/ufoai-data/copyright",
           COPYRIGHT.replace("models/special/*", "base/models/objects/chair/*"))
    pk3 = package / "usr/share/games/ufoai/base/0models.pk3"
    pk3.parent.mkdir(parents=True)
    with zipfile.ZipFile(pk3, "w") as archive:
        for member in ("models/objects/chair/office_chair2.md2", "models/objects/vegi/pino/pino2_leaves.md2",
                       "models/objects/chair/chair.png"):
            archive.writestr(member, b"")
    candidates = SOURCES["ufoai"].candidates(str(tmp_path))
    assert [(c.id, c.caption, c.licence, c.creator) for c in candidates] == [
        ("ufoai/models/objects/chair/office_chair2.md2", "an office chair", "CC0-1.0", "Jane Doe"),
        ("ufoai/models/objects/vegi/pino/pino2_leaves.md2", "pino leaves", "GPL-2+", "2020 Game Team")]
    assert _fragments("ufoai", candidates) == ["ufoai/models/objects/vegi/pino/pino2_leaves.md2"]


def test_redeclipse_lists_map_models_with_their_up_axis_and_artist(tmp_path):
    package = tmp_path / "redeclipse-data"
    _touch(package / "usr/share/doc/redeclipse-data/copyright", COPYRIGHT)
    data = package / "usr/share/games/redeclipse/data"
    for name in ("nieb/desk/model.obj", "dziq/door01/door01.iqm", "dziq/door01/door01_open.iqm",
                 "actors/player/body.iqm", "vanities/tophat/tophat.iqm", "nieb/desk/diffuse.png"):
        _touch(data / name)
    candidates = SOURCES["redeclipse"].candidates(str(tmp_path))
    assert [(c.id, c.caption, c.creator, c.rotation) for c in candidates] == [
        ("redeclipse/dziq/door01/door01.iqm", "a door", "dziq", Z_UP_TO_Y_UP),
        ("redeclipse/dziq/door01/door01_open.iqm", "a door open", "dziq", Z_UP_TO_Y_UP),
        ("redeclipse/nieb/desk/model.obj", "a desk", "nieb", None)]
    assert _fragments("redeclipse", candidates) == ["redeclipse/dziq/door01/door01_open.iqm"]


def test_zeroad_lists_pmd_members_and_marks_tree_parts(tmp_path):
    package = tmp_path / "0ad-data"
    _touch(package / "usr/share/doc/0ad-data/copyright", COPYRIGHT)
    public = package / "usr/share/games/0ad/mods/public/public.zip"
    public.parent.mkdir(parents=True)
    with zipfile.ZipFile(public, "w") as archive:
        for member in ("art/meshes/props/hele_amphora.dae.cached.pmd",
                       "art/meshes/gaia/trees/trunks/oak_1.dae.cached.pmd", "art/textures/skins/amphora.png"):
            archive.writestr(member, b"")
    candidates = SOURCES["0ad"].candidates(str(tmp_path))
    assert [(c.id, c.caption, c.member) for c in candidates] == [
        ("0ad/art/meshes/gaia/trees/trunks/oak_1", "an oak", "art/meshes/gaia/trees/trunks/oak_1.dae.cached.pmd"),
        ("0ad/art/meshes/props/hele_amphora", "an amphora", "art/meshes/props/hele_amphora.dae.cached.pmd")]
    assert _fragments("0ad", candidates) == ["0ad/art/meshes/gaia/trees/trunks/oak_1"]


def test_supertuxkart_lists_library_mains_kart_bodies_and_items(tmp_path):
    package = tmp_path / "supertuxkart-data"
    _touch(package / "usr/share/doc/supertuxkart-data/copyright", COPYRIGHT)
    data = package / "usr/share/games/supertuxkart/data"
    for name in ("library/stklib_computer_a/stklib_computer_a_main.spm",
                 "library/stklib_computer_a/stklib_computer_a_fan.spm",
                 "karts/tux/tux.spm", "karts/tux/wheel-front-left.spm", "models/cake.spm",
                 "tracks/zengarden/zengarden_track.spm", "tracks/zengarden/lantern.spm"):
        _touch(data / name)
    candidates = SOURCES["supertuxkart"].candidates(str(tmp_path))
    assert sorted((c.id.split("/", 1)[1], c.caption) for c in candidates) == [
        ("karts/tux/tux.spm", "a kart"), ("library/stklib_computer_a/stklib_computer_a_main.spm", "a computer"),
        ("models/cake.spm", "a cake"), ("tracks/zengarden/lantern.spm", "a lantern"),
        ("tracks/zengarden/zengarden_track.spm", "a zengarden track")]
    assert _fragments("supertuxkart", candidates) == ["supertuxkart/tracks/zengarden/zengarden_track.spm"]


def test_small_games_table_lists_cars_without_lods(tmp_path):
    package = tmp_path / "torcs-data"
    _touch(package / "usr/share/doc/torcs-data/copyright", COPYRIGHT)
    data = package / "usr/share/games/torcs"
    for name in ("cars/car1-trb1/car1-trb1.acc", "cars/car1-trb1/car1-trb1-lod1.acc", "wheels/trb1/wheel0.acc"):
        _touch(data / name)
    candidates = SOURCES["torcs"].candidates(str(tmp_path))
    assert {c.caption for c in candidates} == {"a racing car"} and {c.licence for c in candidates} == {"GPL-2+"}
    assert sorted(_fragments("torcs", candidates)) == ["torcs/cars/car1-trb1/car1-trb1-lod1.acc",
                                                      "torcs/wheels/trb1/wheel0.acc"]


def test_a_missing_package_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="ufoai: .*0models.pk3.*packages: ufoai-data"):
        collect.main(["--source", "ufoai", "--debs-root", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="torcs: no mesh files found"):
        collect.main(["--source", "torcs", "--debs-root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out/torcs/summary.json").exists()
