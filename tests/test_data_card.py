"""train/data_card.py counts prepared shapes per source, with licences, exclusions and bad meshes."""

from conftest import load_script

from vat import data
from vat.geometry.io import export_mesh
from vat.geometry.procedural import random_shape

data_card = load_script("data_card")
prepare_data = load_script("prepare_data")
SMALL = ["--surface-points", "64", "--uniform-queries", "32", "--near-queries", "32", "--workers", "1"]


def test_card_counts_sources_licences_exclusions_and_bad_meshes(tmp_path, capsys):
    meshes = tmp_path / "meshes"
    export_mesh(random_shape(1).mesh, meshes / "a.obj")
    (meshes / "broken.obj").write_text("not a mesh\n")
    prepare_data.main(["--out", str(tmp_path / "real"), "--meshes", str(meshes), "--augment", "1", *SMALL])
    prepare_data.main(["--out", str(tmp_path / "proc"), "--procedural", "3", *SMALL])
    (tmp_path / "proc" / data.EXCLUDED_IDS).write_text("procedural/000000002\n")
    rows = data_card.main(["--data", str(tmp_path), "--json", str(tmp_path / "card.json")])
    assert set(rows) == {"folder", "folder (augmented copies)", "procedural"}
    assert (rows["folder"]["ok"], rows["folder"]["bad"]) == (1, 1)
    assert rows["folder (augmented copies)"]["ok"] == 1 - data.in_validation("a.obj")
    assert rows["procedural"]["ok"] == 3 and rows["procedural"]["excluded"] == 1
    assert rows["procedural"]["licences"] == {"CC0-1.0": 3}
    table = capsys.readouterr().out
    assert "| procedural | 3 | 0 | 1 |" in table and (tmp_path / "card.json").is_file()
