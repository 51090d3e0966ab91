"""train/data_scaling.py: runs compared at the same steps, shape counts from their data folders."""

import json

import numpy as np

from vat import data
from vat.training import scaling


def make_run(tmp_path, name, ids, losses, hold_out=True):
    """A generator run folder as train_generator.py leaves it: train_config.json and val/ scalars."""
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path / f"data-{name}"
    folder.mkdir()
    records = [{"id": i, "ok": True} for i in ids] + [{"id": "bad", "ok": False, "error": "x"}]
    (folder / "c0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    np.savez(folder / "c0.npz", tokens=np.zeros((len(ids), 4), np.int32))
    run = tmp_path / name
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"train": {"data": str(folder), "hold_out_validation": hold_out}}))
    writer = SummaryWriter(run / "tb")
    for step, loss in losses.items():
        writer.add_scalar("val/loss", loss, step)
        writer.add_scalar("val/retrieval_top1", 1 / loss, step)
    writer.close()
    return run


def test_table_counts_training_shapes_and_compares_at_common_steps(tmp_path):
    ids = [f"shape/{n}" for n in range(60)]
    validation = sum(data.in_validation(i) for i in ids)
    assert 0 < validation < 60
    small = make_run(tmp_path, "small", ids[:20], {500: 3.0, 1000: 2.8})
    large = make_run(tmp_path, "large", ids, {500: 2.9, 1000: 2.5, 1500: 2.4}, hold_out=False)
    records = scaling.main(["--runs", f"small={small}", f"large={large}", "--out", str(tmp_path / "out" / "scaling")])
    shapes = {r["name"]: r["shapes"] for r in records}
    assert shapes == {"small": 20 - sum(data.in_validation(i) for i in ids[:20]), "large": 60}
    assert scaling.common_step(records) == 1000
    text = (tmp_path / "out" / "scaling.md").read_text()
    assert "| large | 60 | 1,500 | 2.400 |" in text
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 1000


def test_bad_run_folder_is_a_clear_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        scaling.main(["--runs", f"x={tmp_path}", "--out", str(tmp_path / "o")])
    assert "NAME=FOLDER" in capsys.readouterr().err


def test_a_corrupt_run_config_is_a_clear_error(tmp_path):
    import pytest

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{not json")
    with pytest.raises(SystemExit, match="is not a train/train_generator.py config"):
        scaling.main(["--runs", f"x={run}", "--out", str(tmp_path / "o")])
