"""Training data: where meshes come from (a folder, procedural shapes, pybullet, Sweet Home 3D),
how one mesh becomes samples (numpy only, no torch). The shard format lives in vat.shards; its names are
re-exported here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import trimesh

from vat.geometry.io import find_mesh_files, load_mesh, normalize_mesh
from vat.geometry.sampling import occupancy_queries, sample_surface
from vat.shards import (  # noqa: F401  (re-exported: this module's API too)
    ARRAY_DTYPES, EXCLUDED_IDS, SHARD_FORMAT_VERSION, ShardDataset, chunk_complete, chunk_records, excluded_ids,
    iter_shards, list_chunks, read_chunk, write_atomic, write_chunk)

log = logging.getLogger(__name__)

SWEETHOME3D_DIR = Path("/usr/share/sweethome3d/furniture")
DEFAULT_HOLDOUT_LIBRARY = "KatorLegaz"
PYBULLET_LICENCE = "zlib"
PROCEDURAL_LICENCE = "CC0-1.0"
FAMILY_SOURCE = "procedural-family"
# Shape augmentation: each axis scaled by a factor in [1/AUGMENT_MAX_SCALE, AUGMENT_MAX_SCALE]
# (log-uniform, the three logs centred on 0 so the volume stays about the same), mirrored half the time.
AUGMENT_MAX_SCALE = 1.33
AUGMENT_MARK = "#aug"
# The record fields, beyond MeshItem's own, that load_item_mesh needs to rebuild a mesh.
REBUILD_KEYS = ("shape_seed", "family", "augment_of", "augment_scale", "augment_mirror")


# ---------------------------------------------------------------------------- items and sources


@dataclass(frozen=True)
class MeshItem:
    """One mesh to prepare. `id` is unique and stable (it seeds the sampling); `path` is the file
    to load (None for procedural shapes); `rotation` is a row-major 3x3 applied on loading."""

    id: str
    source: str
    path: str | None = None
    caption: str | None = None
    licence: str | None = None
    split: str = "train"
    rotation: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict, hash=False)


def folder_items(root: str | os.PathLike) -> list[MeshItem]:
    """Every file under `root` (recursively) with a suffix vat loads; ids are relative paths."""
    root = Path(root)
    return [MeshItem(id=p.relative_to(root).as_posix(), source="folder", path=str(p)) for p in find_mesh_files(root)]


def procedural_items(count: int) -> list[MeshItem]:
    """Procedural shapes with seeds 0..count-1 (see vat.geometry.procedural.random_shape)."""
    return [
        MeshItem(id=f"procedural/{seed:09d}", source="procedural", licence=PROCEDURAL_LICENCE,
                 extra={"shape_seed": seed})
        for seed in range(count)
    ]


def family_items(count_per_family: int, families=None) -> list[MeshItem]:
    """Procedural objects of each family, seeds 0..count_per_family-1 (see vat.geometry.families)."""
    from vat.geometry.families import FAMILIES

    return [
        MeshItem(id=f"family/{family}/{seed:09d}", source=FAMILY_SOURCE, licence=PROCEDURAL_LICENCE,
                 extra={"family": family, "shape_seed": seed})
        for family in (FAMILIES if families is None else families)
        for seed in range(count_per_family)
    ]


def augmentation_draw(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Scale factors (x, y, z) of shape augmentation and whether to mirror x, drawn from `rng`."""
    limit = np.log(AUGMENT_MAX_SCALE)
    logs = rng.uniform(-limit, limit, 3)
    logs = np.clip(logs - logs.mean(), -limit, limit)
    return np.exp(logs), bool(rng.random() < 0.5)


def augmentation(item_id: str) -> dict:
    """The scale factors (x, y, z) and mirror flag of an augmented copy, fixed by its id."""
    digest = hashlib.sha256(f"augment:{item_id}".encode()).digest()
    scale, mirror = augmentation_draw(np.random.default_rng(int.from_bytes(digest[:8], "little")))
    return {"augment_scale": [float(v) for v in scale], "augment_mirror": mirror}


def augmented_items(items: list[MeshItem], copies: int) -> list[MeshItem]:
    """`copies` reshaped copies ("<id>#aug1", ...) of every real mesh of the training split: procedural
    shapes (endless anyway), held-out and validation shapes (whose copies would leak into training
    or inflate validation) get none."""
    return [
        replace(item, id=f"{item.id}{AUGMENT_MARK}{k}",
                extra={**item.extra, "augment_of": item.id, **augmentation(f"{item.id}{AUGMENT_MARK}{k}")})
        for item in items
        if item.split == "train" and item.source not in ("procedural", FAMILY_SOURCE) and not in_validation(item.id)
        for k in range(1, copies + 1)
    ]


def pybullet_items(root: str | os.PathLike | None = None) -> list[MeshItem]:
    """The 1,000 objects of pybullet_data/random_urdfs (zlib licence)."""
    if root is None:
        import pybullet_data  # a data-only package: importing it loads no simulator

        root = Path(pybullet_data.getDataPath()) / "random_urdfs"
    return [
        MeshItem(id=f"pybullet/random_urdfs/{p.parent.name}", source="pybullet", path=str(p),
                 licence=PYBULLET_LICENCE)
        for p in sorted(Path(root).glob("*/*.obj"))
        if p.stem == p.parent.name
    ]


def collected_items(directory: str | os.PathLike) -> list[MeshItem]:
    """The kept, unique meshes of every DIR/SOURCE/index.jsonl that train/collect_meshes.py wrote
    (ids as collected, e.g. "ufoai/models/objects/chair/chair.md2")."""
    indexes = sorted(Path(directory).glob("*/index.jsonl"))
    if not indexes:
        raise FileNotFoundError(f"no */index.jsonl under {directory}: run train/collect_meshes.py first")
    items = []
    for index in indexes:
        for line in index.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the line a running collection is writing
                continue
            if record["status"] != "kept" or record.get("duplicate_of"):
                continue
            items.append(MeshItem(
                id=record["id"], source=record["source"], path=str(index.parent / record["file"]),
                caption=record["caption"], licence=record["licence"],
                extra={"creator": record["creator"], "package": record["package"]},
            ))
    return items


def read_properties(path: str | os.PathLike) -> dict[str, str]:
    """A Java .properties file (latin-1, \\uXXXX escapes, backslash line continuations)."""
    text = Path(path).read_bytes().decode("latin-1")
    text = re.sub(r"\\\r?\n[ \t]*", "", text)
    properties = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, value = re.match(r"([^=:\s]+)\s*[=:]?\s*(.*)$", line).groups()
        properties[key] = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
    return properties


def extract_catalogue(sh3f: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Unzip a .sh3f catalogue once into cache_dir/<name>/ (atomically: parallel jobs may race)."""
    sh3f = Path(sh3f)
    target = Path(cache_dir) / sh3f.stem
    if (target / "PluginFurnitureCatalog.properties").is_file():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    log.info("unzipping %s into %s", sh3f, target)
    with zipfile.ZipFile(sh3f) as archive:
        archive.extractall(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another job finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _caption_from_name(name: str) -> str:
    # "Coffee cup" -> "a coffee cup", "TV" -> "a TV", "Scissors" -> "scissors",
    # "Bowl with fruits" -> "a bowl with fruits".
    words = name.strip()
    if len(words) > 1 and not words[:2].isupper():
        words = words[0].lower() + words[1:]
    head = re.split(r" (?:with|of|for|on|in) ", words)[0].split()[-1].lower() if words else ""
    if head.endswith("s") and not head.endswith(("ss", "us")):
        return words
    return ("an " if words[:1].lower() in "aeiou" else "a ") + words


def catalogue_pieces(properties: dict[str, str]) -> Iterator[tuple[str, str, str, str, tuple[float, ...] | None]]:
    """(n, model path, name, piece id, row-major 3x3 rotation or None) of every piece `model#n` of a Sweet
    Home 3D furniture catalogue's properties."""
    for key, model in properties.items():
        if not key.startswith("model#"):
            continue
        n = key.split("#", 1)[1]
        rotation = properties.get(f"modelRotation#{n}")
        yield (n, model, properties.get(f"name#{n}", ""), properties.get(f"id#{n}", n).split("#")[-1],
               tuple(float(v) for v in rotation.split()) if rotation else None)


def sweethome3d_items(
    catalogue_dir: str | os.PathLike = SWEETHOME3D_DIR,
    cache_dir: str | os.PathLike | None = None,
    holdout_library: str | None = DEFAULT_HOLDOUT_LIBRARY,
) -> list[MeshItem]:
    """Every piece of every .sh3f catalogue, named and licensed from the catalogue's properties.

    Pieces of `holdout_library` (a catalogue's file name without .sh3f) get split "heldout".
    """
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vat" / "sweethome3d"
    catalogues = sorted(Path(catalogue_dir).glob("*.sh3f"))
    if not catalogues:
        raise FileNotFoundError(
            f"no .sh3f catalogues in {catalogue_dir}; install them with `apt-get install sweethome3d-furniture`"
        )
    items = []
    for sh3f in catalogues:
        folder = extract_catalogue(sh3f, cache_dir)
        properties = read_properties(folder / "PluginFurnitureCatalog.properties")
        licence = properties.get("license", "")
        split = "heldout" if sh3f.stem == holdout_library else "train"
        for n, model, name, piece, rotation in catalogue_pieces(properties):
            items.append(MeshItem(
                id=f"sweethome3d/{sh3f.stem}/{piece}",
                source="sweethome3d",
                path=str(folder / model.lstrip("/")),
                caption=_caption_from_name(name) if name else None,
                licence=licence,
                split=split,
                rotation=rotation,
                extra={"library": sh3f.stem, "name": name, "model": f"{sh3f.name}:{model}",
                       "creator": properties.get(f"creator#{n}"),
                       "category": properties.get(f"category#{n}")},
            ))
    return items


# ---------------------------------------------------------------------------- one mesh -> samples


@dataclass(frozen=True)
class SampleConfig:
    """Per-mesh sample counts (the paper: 80,000 surface points, 20k + 20k queries)."""

    surface_points: int = 16_384
    uniform_queries: int = 20_000
    near_queries: int = 20_000
    bound: float = 0.55  # uniform queries fill [-bound, bound]^3, a little beyond the unit cube
    seed: int = 0
    timeout: float = 600.0  # seconds per mesh; 0 disables


# A validation split inside the training libraries, for choosing what the held-out test split must not
# choose (sampling settings, checkpoints): a fixed share of every source, picked by a hash of the shape's
# id, so it is the same on every machine and after data is made again.
VALIDATION_SHARE = 1 / 12


def base_id(item_id: str) -> str:
    """The id of the shape an augmented copy was made from ("a/b#aug2" -> "a/b"); other ids as they are."""
    return item_id.split(AUGMENT_MARK, 1)[0]


def in_validation(item_id: str, share: float = VALIDATION_SHARE) -> bool:
    """Whether a shape belongs to the validation split (about `share` of any set of ids). Decided by
    the base id, so an augmented copy is always on the same side as its original."""
    digest = hashlib.sha256(f"validation:{base_id(item_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") < share * 2 ** 64


def item_seed(item_id: str, base_seed: int = 0) -> int:
    """A 63-bit seed from the item's id, so a mesh gets the same samples in any run or shard."""
    digest = hashlib.sha256(f"{base_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_item_mesh(item: MeshItem) -> tuple[trimesh.Trimesh, str | None]:
    """The item's mesh (not normalised) and its caption."""
    if item.source == "procedural":
        from vat.geometry.procedural import random_shape

        shape = random_shape(item.extra["shape_seed"])
        return shape.mesh, shape.caption
    if item.source == FAMILY_SOURCE:
        from vat.geometry.families import family_shape

        shape = family_shape(item.extra["family"], item.extra["shape_seed"])
        return shape.mesh, shape.caption
    mesh = load_mesh(item.path)
    matrix = item_transform(item)
    if matrix is not None:
        mesh.apply_transform(matrix)  # a mirror reverses the faces too, so they still face outwards
    return mesh, item.caption


def item_transform(item: MeshItem) -> np.ndarray | None:
    """The 4x4 applied to a file's mesh on loading: the catalogue rotation, then an augmented copy's
    scaling and mirror (x -> -x); None when there is neither."""
    matrix = np.eye(4)
    if item.rotation is not None:
        matrix[:3, :3] = np.reshape(item.rotation, (3, 3))
    if "augment_scale" in item.extra:
        scale = np.array(item.extra["augment_scale"], dtype=float)
        if item.extra.get("augment_mirror"):
            scale[0] = -scale[0]
        matrix = np.diag([*scale, 1.0]) @ matrix
    return None if np.array_equal(matrix, np.eye(4)) else matrix


def sample_item(item: MeshItem, config: SampleConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """Normalise one mesh to the unit cube and sample it: (metadata, arrays of ARRAY_DTYPES)."""
    seed = item_seed(item.id, config.seed)
    mesh, caption = load_item_mesh(item)
    mesh, transform = normalize_mesh(mesh)
    rng = np.random.default_rng(seed)
    points, normals = sample_surface(mesh, config.surface_points, rng)
    queries = occupancy_queries(mesh, config.uniform_queries, config.near_queries, config.bound, seed=rng)
    arrays = {
        "surface_points": points,
        "surface_normals": normals,
        "query_points": queries["points"],
        "query_sdf": queries["sdf"],
        "query_occupancy": queries["occupancy"],
    }
    meta = {
        **item_metadata(item),
        "caption": caption,
        "seed": seed,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "watertight": bool(mesh.is_watertight),
        "normalization": np.round(transform, 9).tolist(),
    }
    return meta, {k: v.astype(ARRAY_DTYPES[k]) for k, v in arrays.items()}


def item_metadata(item: MeshItem) -> dict:
    meta = asdict(item)
    meta.update(meta.pop("extra"))
    if meta["rotation"] is None:  # kept when set: rebuilding the mesh from its record needs it
        meta.pop("rotation")
    return meta


class MeshTimeout(Exception):
    """Raised inside `time_limit` when its seconds are up."""


def _raise_timeout(signum, frame):
    raise MeshTimeout()


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise MeshTimeout in the block after `seconds` (0: no limit; only on the main thread). It uses SIGALRM,
    so it interrupts Python code but not a long call inside a C extension until that call returns."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def process_item(item: MeshItem, config: SampleConfig) -> tuple[dict, dict[str, np.ndarray] | None]:
    """sample_item that never raises: a bad mesh gives ({..., "ok": False, "error": ...}, None); at most
    config.timeout seconds (see time_limit)."""
    start = time.process_time()  # CPU time, all threads: meaningful on a shared machine too
    try:
        with time_limit(config.timeout):
            meta, arrays = sample_item(item, config)
        return {**meta, "ok": True, "cpu_seconds": round(time.process_time() - start, 3)}, arrays
    except MeshTimeout:
        error = f"TimeoutError: took longer than {config.timeout:g} s"
    except Exception as exc:  # one bad mesh must not stop a run over 800k of them
        error = f"{type(exc).__name__}: {exc}"
    return {**item_metadata(item), "ok": False, "error": error}, None
