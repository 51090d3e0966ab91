"""train/data_scaling.py: runs compared at the same steps, shape counts from their data folders."""

import json
from pathlib import Path

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
    assert "| large | 60 | - | - | 1,500 | 2.400 |" in text
    assert text.startswith("# Generator runs compared: small, large\n") and "[scaling.png](scaling.png)" in text
    assert f"`python train/data_scaling.py --runs small={small} large={large} --out" in text
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
    with pytest.raises(SystemExit, match="is not a config of train/train_generator.py"):
        scaling.main(["--runs", f"x={run}", "--out", str(tmp_path / "o")])


def test_runs_of_different_sizes_get_their_size_and_pace(tmp_path):
    """A run's width x depth comes from its train_config.json, its pace is the median logged step time
    (a stalled window does not move it), and the table says both."""
    from torch.utils.tensorboard import SummaryWriter

    ids = [f"shape/{n}" for n in range(30)]
    wide = make_run(tmp_path, "wide", ids, {500: 2.7, 1000: 2.5}, hold_out=False)
    config = json.loads((wide / "train_config.json").read_text())
    (wide / "train_config.json").write_text(json.dumps({**config, "generator": {"width": 256, "depth": 6}}))
    writer = SummaryWriter(wide / "tb")
    for step, seconds in ((25, 2.3), (50, 2.4), (75, 95.0)):
        writer.add_scalar("time/step_seconds", seconds, step)
    writer.close()
    tiny = make_run(tmp_path, "tiny", ids, {500: 2.8, 1000: 2.6}, hold_out=False)
    records = scaling.main(["--runs", f"wide={wide}", f"tiny={tiny}", "--out", str(tmp_path / "arms")])
    assert [r["model"] for r in records] == ["256 x 6", "-"]
    assert abs(records[0]["seconds_per_step"] - 2.4) < 1e-6 and records[1]["seconds_per_step"] is None
    text = (tmp_path / "arms.md").read_text()
    assert "| wide | 30 | 256 x 6 | 2.40 | 1,000 | 2.500 |" in text and "| tiny | 30 | - | - | 500 | 2.800 |" in text


def test_tokenizer_runs_are_compared_by_iou_and_not_mixed_with_generator_runs(tmp_path):
    """A train_tokenizer.py run (its config holds the tokenizer's "model") gets the IoU columns: a row per
    validation (the unquantised IoU is logged at each), the tokens' IoU and CS-IoU where it was quantised."""
    from torch.utils.tensorboard import SummaryWriter

    ids = [f"shape/{n}" for n in range(40)]
    runs = []
    for name, count, ious in (("old", 10, (0.30, 0.33)), ("new", 40, (0.31, 0.36))):
        run = make_run(tmp_path, name, ids[:count], {}, hold_out=False)
        config = json.loads((run / "train_config.json").read_text())
        if name == "new":  # the paper's filter left one shape out of the run's data set
            (Path(config["train"]["data"]) / data.EXCLUDED_IDS).write_text(ids[3] + "\n")
        (run / "train_config.json").write_text(json.dumps({**config, "model": {"width": 64}}))
        writer = SummaryWriter(run / "tb")
        writer.add_scalar("val/iou_unquantized", ious[0], 500)
        for tag, value in (("val/iou_unquantized", ious[1] + 0.05), ("val/iou", ious[1]), ("val/cs_iou", ious[1] / 2)):
            writer.add_scalar(tag, value, 1000)
        writer.close()
        runs.append(f"{name}={run}")
    records = scaling.main(["--runs", *runs, "--out", str(tmp_path / "tok")])
    assert [r["stage"] for r in records] == ["tokenizer", "tokenizer"] and records[1]["model"] == "width 64"
    text = (tmp_path / "tok.md").read_text()
    assert "IoU (tokens)" in text and "loss" not in text
    assert "| old | 10 | width 64 | - | 500 | - | - | 0.3000 |" in text
    assert "| new | 39 | width 64 | - | 1,000 | 0.3600 | 0.1800 | 0.4100 |" in text
    assert scaling.common_step(records) == 1000 and (tmp_path / "tok.png").stat().st_size > 1000
    generator = make_run(tmp_path, "gen", ids, {500: 2.9})
    import pytest

    with pytest.raises(SystemExit, match="mix generator and tokenizer"):
        scaling.main(["--runs", runs[0], f"gen={generator}", "--out", str(tmp_path / "mixed")])
    # --earlier: an earlier output's runs join the table though their folders are gone.
    import shutil

    shutil.rmtree(tmp_path / "new")
    again = scaling.main(["--runs", runs[0], "--earlier", str(tmp_path / "tok.json"), "--out", str(tmp_path / "again")])
    assert [r["name"] for r in again] == ["old", "new", "old"]
    assert "| new | 39 | width 64 | - | 1,000 | 0.3600 | 0.1800 | 0.4100 |" in (tmp_path / "again.md").read_text()
    with pytest.raises(SystemExit, match="mix generator and tokenizer"):
        scaling.main(["--runs", f"gen={generator}", "--earlier", str(tmp_path / "tok.json"), "--out", str(tmp_path / "m")])
    (tmp_path / "bad.json").write_text('[{"name": "x"}]')
    with pytest.raises(SystemExit, match="not an OUT.json of train/data_scaling.py"):
        scaling.main(["--runs", runs[0], "--earlier", str(tmp_path / "bad.json"), "--out", str(tmp_path / "b")])
