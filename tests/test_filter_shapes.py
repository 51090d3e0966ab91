"""train/filter_shapes.py: the shipped tokenizer keeps a good shape and excludes one whose labels are broken."""

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import load_script

from vat import data
from vat.geometry.io import export_mesh

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints"
filter_shapes = load_script("filter_shapes")
prepare_data = load_script("prepare_data")
pytestmark = pytest.mark.skipif(not (SHIPPED / "tokenizer.safetensors").is_file(), reason="no shipped tokenizer")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A prepared folder of two good shapes, and beside it one of the same shapes with inside and outside swapped."""
    meshes = tmp_path_factory.mktemp("meshes")
    export_mesh(trimesh.creation.icosphere(3, radius=0.4), meshes / "sphere.ply")
    export_mesh(trimesh.creation.box((0.8, 0.3, 0.5)), meshes / "box.ply")
    root = tmp_path_factory.mktemp("prepared")
    prepare_data.main(["--out", str(root / "good"), "--meshes", str(meshes), "--workers", "1",
                       "--surface-points", "4096", "--uniform-queries", "1000", "--near-queries", "1000"])
    arrays, records = data.read_chunk(data.list_chunks(root / "good")[0])
    arrays["query_occupancy"] = (1 - arrays["query_occupancy"].astype(np.float32)).astype(np.float16)
    broken = [{**r, "id": "broken/" + r["id"]} for r in records]
    data.write_chunk(root / "broken", "c0", broken, [{k: v[i] for k, v in arrays.items()} for i in range(len(broken))])
    return root


def test_broken_labels_are_excluded_and_good_shapes_kept(folders):
    summary = filter_shapes.main(["--data", str(folders), "--tokenizer", str(SHIPPED), "--min-iou", "0.2"])
    by_folder = {Path(row["folder"]).name: row for row in summary}
    assert by_folder["good"]["excluded"] == 0 and by_folder["good"]["mean_iou"] > 0.6
    assert by_folder["broken"]["excluded"] == 2 and by_folder["broken"]["mean_iou"] < 0.2
    assert data.excluded_ids(folders) == {"broken/box.ply", "broken/sphere.ply"}
    assert sorted(r["id"] for r in data.ShardDataset(folders).records) == ["box.ply", "sphere.ply"]
    item = data.ShardDataset(folders)[1]  # rows still line up with their arrays after the exclusions
    assert item["id"] == "sphere.ply" and np.abs(np.linalg.norm(item["surface_points"].astype(float), axis=1) - 0.5).max() < 0.02


def test_a_rerun_scores_nothing_again_and_applies_the_new_threshold(folders):
    filter_shapes.main(["--data", str(folders), "--tokenizer", str(SHIPPED), "--min-iou", "0.2"])
    lines = (folders / "good" / filter_shapes.SCORES).read_text().splitlines()
    summary = filter_shapes.main(["--data", str(folders), "--tokenizer", str(SHIPPED), "--min-iou", "1.01"])
    assert (folders / "good" / filter_shapes.SCORES).read_text().splitlines() == lines  # nothing scored twice
    assert {json.loads(line)["id"] for line in lines} == {"box.ply", "sphere.ply"}
    assert sum(row["excluded"] for row in summary) == 4
    assert len(data.ShardDataset(folders)) == 0


def test_a_folder_without_shards_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no shards"):
        filter_shapes.main(["--data", str(tmp_path), "--tokenizer", str(SHIPPED)])


def test_a_subset_of_the_queries_scores_about_as_all_of_them(folders):
    from vat.models.tokenizer import VAT

    model = VAT.from_pretrained(SHIPPED).float().eval()
    shapes = list(data.iter_shards(folders / "good"))  # all of them, excluded or not
    full, subset = filter_shapes.score_shapes(model, shapes), filter_shapes.score_shapes(model, shapes, queries=800)
    assert subset != full and np.allclose(subset, full, atol=0.05)
