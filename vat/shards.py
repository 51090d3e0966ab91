"""The shard format that train/prepare_data.py writes and training reads (numpy only, no torch): chunks
of prepared meshes (NAME.jsonl records + NAME.npz arrays), listed, read and indexed by ShardDataset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

# Shard arrays, stacked over the meshes of a chunk: [M, S, 3] surface samples in the unit cube,
# [M, Q, 3] occupancy queries (uniform ones first, then near-surface) with sdf (negative inside)
# and the semi-continuous label. Surface samples tolerate float16 (steps of 2.4e-4 near |x| = 0.5);
# query points stay float32 because their labels change across a 1/64-wide band.
ARRAY_DTYPES = {
    "surface_points": np.float16,
    "surface_normals": np.float16,
    "query_points": np.float32,
    "query_sdf": np.float32,
    "query_occupancy": np.float16,
}
SHARD_FORMAT_VERSION = 1


# A chunk is two files: NAME.jsonl with one line per item attempted (bad ones with "ok": false
# and "error"), and NAME.npz with the arrays of the ok ones stacked in the same order. The npz is
# renamed into place last, so its presence means the chunk is complete.


def write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def write_chunk(directory: str | os.PathLike, name: str, records: list[dict],
                samples: list[dict[str, np.ndarray] | None]) -> Path:
    """Write one chunk (records of every attempted item; samples None for bad items)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_atomic(directory / f"{name}.jsonl", lambda f: f.write(lines.encode()))
    good = [s for s in samples if s is not None]
    arrays = {
        key: np.stack([s[key] for s in good]) if good else np.zeros((0,), dtype)
        for key, dtype in ARRAY_DTYPES.items()
    }
    path = directory / f"{name}.npz"
    write_atomic(path, lambda f: np.savez(f, **arrays))
    return path


def chunk_records(npz_path: str | os.PathLike) -> list[dict]:
    """Every record (ok and bad) of a chunk, in order."""
    with open(Path(npz_path).with_suffix(".jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def chunk_complete(npz_path: str | os.PathLike, ids: list[str]) -> bool:
    """True if the chunk exists and holds exactly these item ids (a resumed run skips it)."""
    npz_path = Path(npz_path)
    if not npz_path.is_file() or not npz_path.with_suffix(".jsonl").is_file():
        return False
    return [r["id"] for r in chunk_records(npz_path)] == list(ids)


# A prepared folder may hold EXCLUDED_IDS files (train/filter_shapes.py writes them): one shape id a line,
# shapes kept on disk but left out of training (ShardDataset, train/prepare_generator_data.py).
EXCLUDED_IDS = "excluded-ids.txt"


def excluded_ids(directory: str | os.PathLike) -> set[str]:
    """The ids listed in every EXCLUDED_IDS file under `directory` (and its subfolders)."""
    ids: set[str] = set()
    for path in sorted(Path(directory).rglob(EXCLUDED_IDS)):
        ids.update(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return ids


def list_chunks(directory: str | os.PathLike) -> list[Path]:
    """The complete chunks (.npz with a .jsonl) under `directory` and its subfolders (so several
    prepared folders side by side train as one), sorted by path."""
    return sorted(p for p in Path(directory).rglob("*.npz") if p.with_suffix(".jsonl").is_file())


def read_chunk(npz_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[dict]]:
    """A chunk's arrays ([M, ...] each) and the metadata of its M ok meshes, in array order."""
    with np.load(npz_path) as data:
        arrays = {key: data[key] for key in data.files}
    records = [r for r in chunk_records(npz_path) if r["ok"]]
    return arrays, records


def iter_shards(directory: str | os.PathLike) -> Iterator[dict]:
    """Every prepared mesh under `directory`, one dict each: its metadata plus its arrays."""
    for path in list_chunks(directory):
        arrays, records = read_chunk(path)
        for row, record in enumerate(records):
            yield {**record, **{key: value[row] for key, value in arrays.items()}}


class ShardDataset:
    """Map-style random access over prepared shards (torch DataLoader accepts it as it is).

    Keeps the last chunk read in memory, so shuffle within chunks (or sample chunk by chunk)
    for speed. Shapes listed in the folder's EXCLUDED_IDS files are left out, and so are those whose id
    `exclude` (a predicate, e.g. vat.data.in_validation) is true of.
    """

    def __init__(self, directory: str | os.PathLike, exclude=None):
        self.chunks = list_chunks(directory)
        excluded = excluded_ids(directory)
        self.records: list[dict] = []
        self._index: list[tuple[int, int]] = []
        for c, path in enumerate(self.chunks):
            ok = [(row, r) for row, r in enumerate(r for r in chunk_records(path) if r["ok"])
                  if r["id"] not in excluded and not (exclude is not None and exclude(r["id"]))]
            self.records.extend(r for _, r in ok)
            self._index.extend((c, row) for row, _ in ok)
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def chunk_of_items(self) -> np.ndarray:
        """[len(self)] the chunk each item lies in (items are listed chunk by chunk)."""
        return np.array([chunk for chunk, _ in self._index], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        c, row = self._index[i]
        if self._cached is None or self._cached[0] != c:
            with np.load(self.chunks[c]) as data:
                self._cached = (c, {key: data[key] for key in data.files})
        return {**self.records[i], **{key: value[row] for key, value in self._cached[1].items()}}
