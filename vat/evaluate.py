"""Evaluation runs on the pinned protocol (docs/protocol.md): tokenizer reconstruction beside the Draco
and voxel baselines at the same byte budget; generation against its unconditional floor and the
match rate."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import trimesh
from tqdm.auto import tqdm

from vat.baselines import draco_at_budget, voxel_at_budget
from vat.errors import VatError
from vat.geometry.io import LOAD_FORMATS, find_mesh_files, load_mesh, normalize_mesh
from vat.geometry.sampling import sample_surface
from vat.metrics import (ICP_TARGET_FACTOR, MATCH_SAMPLES, accuracy, chamfer_fscore, compare_meshes, cs_iou, iou,
                         match_chamfer_matrix, match_ranks, near_queries, protocol_queries)
from vat.pipeline import UNGUIDED_SAMPLING, MeshCodec, resolve_draft_scales
from vat.ui import PROTOCOL_RESOLUTION

log = logging.getLogger(__name__)


def mesh_files(directory: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Mesh files under `directory` (recursive, sorted), at most `limit`."""
    files = find_mesh_files(directory)
    if not files:
        raise VatError(f"{directory} holds no mesh files ({', '.join(LOAD_FORMATS)})")
    return files[:limit] if limit else files


def reconstruction_item(codec: MeshCodec, path: Path, resolution: int = PROTOCOL_RESOLUTION, baselines: bool = True,
                        seed: int = 0, search: int = 1, raw: bool | None = None, max_bytes: int | None = None,
                        vat_path: Path | None = None, refine: int = 0, average: int = 1) -> dict:
    """Every protocol number for one mesh: Acc, IoU, Near-Acc, CS-IoU, Chamfer, F-score, bytes,
    ratio, and the baselines' F-score and bytes at the tokenizer's byte budget. The mesh is encoded as it is
    in its file (`vat encode`'s options), the bytes are written (to `vat_path` when given) and read back, and
    what was read is decoded (into the unit cube, where the protocol scores) and checked against the
    encoded tokens (round_trip)."""
    start = time.perf_counter()
    original = load_mesh(path)
    mesh, _ = normalize_mesh(original)
    encoded = codec.encode(original, seed=seed, search=search, raw=raw, max_bytes=max_bytes, refine=refine,
                           average=average)
    data = encoded.data
    if vat_path is not None:
        Path(vat_path).write_bytes(data)
        data = Path(vat_path).read_bytes()
    indices = list(codec.read_file(data).indices)
    stored = len(indices)
    queries, near = protocol_queries(mesh, seed=seed), near_queries(mesh, seed=seed)
    ious = []
    for s in range(1, stored + 1):
        field = codec.occupancy_fn(indices, s)
        ious.append(iou(field(queries["points"]) > 0, queries["inside"]))
    predicted = field(queries["points"]) > 0
    decoded = codec.decode_mesh(indices, resolution=resolution)
    item = {
        "mesh": str(path),
        "input_bytes": path.stat().st_size,
        "bytes": len(data),
        "ratio": path.stat().st_size / len(data),
        "tokens": sum(len(i) for i in indices),
        "scales": stored,
        "round_trip": len(indices) == len(encoded.indices) and all(
            np.array_equal(a, b) for a, b in zip(indices, encoded.indices)),
        "acc": accuracy(predicted, queries["inside"]),
        "iou": ious[-1],
        "near_acc": accuracy(field(near["points"]) > 0, near["inside"]),
        "cs_iou": cs_iou(ious),
        "iou_per_scale": ious,
        **{k: v for k, v in chamfer_fscore(mesh, decoded, seed=seed).items() if k in ("chamfer", "f_score")},
    }
    item["entropy_coded"] = encoded.entropy_coded
    if encoded.refined is not None:  # the check IoUs are the encoder's own points, not the protocol's
        item.update(refine_steps=encoded.refined.steps, refine_kept=encoded.refined.kept,
                    refine_check_iou_before=encoded.refined.iou_before, refine_check_iou=encoded.refined.iou_after)
    if codec.prior is not None:  # what the prior says of the tokens, coded or not
        item["bits_per_scale"] = codec.prior.bits(indices)
        item["bits_per_token"] = float(np.dot(item["bits_per_scale"], [len(i) for i in indices]) / item["tokens"])
    if baselines:
        for name, result in (("draco", draco_at_budget(mesh, len(data), seed=seed)),
                             ("voxel", voxel_at_budget(mesh, len(data)))):
            item[f"{name}_f_score"] = result.detail["f_score"] if result else 0.0
            item[f"{name}_chamfer"] = result.detail["chamfer"] if result else None
            item[f"{name}_bytes"] = result.bytes if result else None
    item["seconds"] = time.perf_counter() - start
    return item


# Numeric item keys that name something (a seed) rather than measure it: never averaged.
IDENTIFIERS = ("seed", "kept_seed")


def summarize(items: list[dict]) -> dict:
    """Mean of every numeric key but IDENTIFIERS (and of each *_per_scale list, per scale) over the items that
    succeeded, and the counts."""
    ok = [i for i in items if "error" not in i]
    summary = {"meshes": len(items), "failed": len(items) - len(ok)}
    keys = [k for k, v in (ok[0].items() if ok else [])
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in IDENTIFIERS]
    for key in keys:
        values = [i[key] for i in ok if isinstance(i.get(key), (int, float))]
        if values:
            summary[key] = float(np.mean(values))
    for key in [k for k in (ok[0] if ok else {}) if k.endswith("_per_scale")]:
        per_scale = [i[key] for i in ok if key in i]
        if per_scale and len({len(p) for p in per_scale}) == 1:  # the mean per scale s (IoU, F, bits, ...)
            summary[key] = np.mean(per_scale, axis=0).tolist()
    if ok and "round_trip" in ok[0]:
        summary["round_trip"] = all(i["round_trip"] for i in ok)  # every file read back to its tokens
    return summary


def evaluate_reconstruction(codec: MeshCodec, directory: str | os.PathLike, limit: int | None = None,
                            resolution: int = PROTOCOL_RESOLUTION, baselines: bool = True, seed: int = 0,
                            search: int = 1, raw: bool | None = None, max_bytes: int | None = None,
                            out_dir: str | os.PathLike | None = None, refine: int = 0, on_item=None,
                            done: dict | None = None, average: int = 1) -> dict:
    """eval-recon: every mesh of `directory` encoded (with `search` candidates, each the mean latent of
    `average` samplings, and `refine` steps, MeshCodec.encode; `raw`, `max_bytes` as there), written to a file
    (NNN-NAME.vat in `out_dir`, else in a temporary folder), read back, decoded and scored; the summary holds
    the means and the options used. on_item(result so far) is called after each mesh. `done`, an earlier
    (partial) result of the same options, resumes it: its meshes are kept and not evaluated again."""
    options = {"search": search, "refine": refine, "raw": raw, "max_bytes": max_bytes}
    if average != 1:  # written only when not 1: results from before the option have no such key
        options["average"] = average
    items = resumed_items(done, {**options, "average": average}, defaults={"average": 1}) if done else []
    finished = {item["mesh"] for item in items}
    with tempfile.TemporaryDirectory(prefix="vat-eval-recon-") as temporary:
        folder = Path(out_dir if out_dir is not None else temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for k, path in enumerate(tqdm(mesh_files(directory, limit), desc="eval-recon", unit="mesh")):
            if str(path) in finished:
                continue
            try:
                items.append(reconstruction_item(codec, path, resolution, baselines, seed, search, raw, max_bytes,
                                                 folder / f"{k:03d}-{path.stem}.vat", refine, average))
            except VatError as exc:  # a bad mesh or an empty decode: record it, go on
                log.warning("%s: %s", path, exc)
                items.append({"mesh": str(path), "error": str(exc)})
            if on_item is not None:  # the run so far (a long run's partial results)
                on_item(_recon_result(items, options))
    return _recon_result(items, options)


def resumed_items(done: dict, options: dict, command: str = "eval-recon",
                  defaults: dict | None = None) -> list[dict]:
    """The items of an earlier `command` result (its JSON, partial or whole), checked to come from the same
    options (the keys of `options` in its summary; a key it lacks counts as its value in `defaults`)."""
    defaults = defaults or {}
    try:
        summary, items = done["summary"], done["items"]
        ran = {key: summary.get(key, defaults.get(key)) for key in options}
        if not isinstance(items, list) or not all(isinstance(i, dict) and "mesh" in i for i in items):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise VatError(f"the file to resume is not an {command} result ({{summary, items}})") from None
    if ran != options:
        raise VatError(f"cannot resume: that run used {ran}, this one {options}")
    return list(items)


def _recon_result(items: list[dict], options: dict) -> dict:
    return {"summary": {**summarize(items), **options}, "items": items}


# Generation protocol: one view per mesh from the paper's orbit (render_views with this seed, the
# first view), generated with these settings, scored after ICP on normalised meshes.
EVAL_GEN_VIEW_SEED = 0


def generation_item(pipeline, path: Path, seed: int = 0, resolution: int = PROTOCOL_RESOLUTION,
                    settings: dict | None = None, view_seed: int = EVAL_GEN_VIEW_SEED, size: int = 512,
                    unconditional: trimesh.Trimesh | None = None,
                    search: int = 1, per_scale: bool = False, drafts: int = 0,
                    draft_scales: int | None = None) -> tuple[dict, trimesh.Trimesh, trimesh.Trimesh]:
    """Render a view of the mesh, generate from it, ICP-align the result to the mesh, score it (F@0.01,
    F@0.05, Chamfer), generating with `search` samples (and `drafts`: Pipeline.generate); the `unconditional`
    mesh is scored the same way (uncond_*). With `per_scale`, the mesh of every prefix of scales is decoded at
    `resolution` and scored the same way too (per_scale_scores). Returns the item,
    the mesh and the generated mesh; a generation with no surface gives an item with `error` and
    `generation_failed` and None for the generated mesh. A mesh that cannot be read raises VatError."""
    from vat.geometry.render import load_for_render, render_views

    start = time.perf_counter()
    mesh = load_mesh(path)
    view = render_views(load_for_render(path), views=1, size=size, seed=view_seed)[0]
    generation = pipeline.generate(image=view.rgba, seed=seed, resolution=resolution, search=search, drafts=drafts,
                                   draft_scales=draft_scales, **(settings or {}))
    generated = generation.mesh()
    if len(generated.faces) == 0:  # the model's failure, not the mesh's: the caller counts it as a miss
        return ({"mesh": str(path), "error": "the generated occupancy has no surface", "generation_failed": True,
                 "seed": seed, "seconds": time.perf_counter() - start}, mesh, None)
    scores = compare_meshes(mesh, generated, icp=True, normalize="each", seed=seed)
    item = {
        "mesh": str(path),
        "f_score": scores["f_score"],
        "f_score_005": scores["f_score_005"],
        "chamfer": scores["chamfer"],
        "seed": seed,
        "kept_seed": generation.seed,
        "view": {"azimuth": view.azimuth, "elevation": view.elevation},
        "faces": len(generated.faces),
        **{f"{k}_seconds": v for k, v in generation.timings.items()},
    }
    if per_scale:
        item.update(per_scale_scores(mesh, generation, scores, seed))
    if unconditional is not None:
        floor = compare_meshes(mesh, unconditional, icp=True, normalize="each", seed=seed)
        item.update(uncond_f_score=floor["f_score"], uncond_f_score_005=floor["f_score_005"],
                    uncond_chamfer=floor["chamfer"])
    item["seconds"] = time.perf_counter() - start
    return item, mesh, generated


def per_scale_scores(mesh: trimesh.Trimesh, generation, full: dict, seed: int = 0) -> dict:
    """F@0.01 and F@0.05 after ICP of the mesh decoded from each prefix of `generation`'s scales
    (f_score_per_scale, f_score_005_per_scale; the last is `full`, the full decode's scores, and a prefix
    with no surface scores 0), the number of scales whose prefix scores best (best_scale), and a digest
    of each prefix's tokens (prefix_digests: equal digests, equal meshes), which shows which scales
    depend on the input."""
    f01, f05 = [], []
    for scales in range(1, generation.num_scales):
        prefix = generation.mesh(scales)
        scores = (compare_meshes(mesh, prefix, icp=True, normalize="each", seed=seed) if len(prefix.faces)
                  else {"f_score": 0.0, "f_score_005": 0.0})
        f01.append(scores["f_score"])
        f05.append(scores["f_score_005"])
    f01.append(full["f_score"])
    f05.append(full["f_score_005"])
    digest, digests = hashlib.sha1(), []
    for tokens in generation.indices:  # the digest of scales 1..s, s = 1..S
        digest.update(np.asarray(tokens, np.int64).tobytes())
        digests.append(digest.hexdigest()[:12])
    return {"f_score_per_scale": f01, "f_score_005_per_scale": f05, "best_scale": int(np.argmax(f01)) + 1,
            "full_is_best": bool(f01[-1] >= max(f01)), "prefix_digests": digests}


def per_scale_summary(items: list[dict]) -> dict:
    """Over the items with per-scale scores: how many have the full decode at least as good as every
    shorter prefix (full_is_best), and per scale the number of distinct token prefixes among them
    (distinct_prefixes_per_scale: 1 means that scale is the same for every input)."""
    scored = [i for i in items if "prefix_digests" in i]
    if not scored:
        return {}
    scales = len(scored[0]["prefix_digests"])
    return {"full_is_best": sum(i["full_is_best"] for i in scored),
            "distinct_prefixes_per_scale": [len({i["prefix_digests"][s] for i in scored}) for s in range(scales)]}


def _attempted(item: dict) -> bool:
    """An eval-gen item the match counts: generated and scored, or generated with no surface (a miss)."""
    return "error" not in item or bool(item.get("generation_failed"))


class MatchSamples:
    """What eval-gen's match rate compares: surface samples of each generation (MATCH_SAMPLES) and of each
    mesh (x ICP_TARGET_FACTOR; a generation with no surface adds its mesh alone), drawn in the order the
    pieces are visited from one generator seeded with the run's seed; samples, not meshes: N meshes of 256^3
    marching cubes would not fit in memory. With `path` they are saved after each piece (.npz: arrays and
    strings, no pickles), with the generator's state after it and the run's `options`, so that a stopped run
    resumed with the same options (`restore`) draws what the run would have drawn in one go."""

    def __init__(self, seed: int, path: str | os.PathLike | None = None, options: dict | None = None):
        self.rng = np.random.default_rng(seed)
        self.path = Path(path) if path else None
        self.options = json.dumps(options or {}, sort_keys=True)
        self.generated: list[np.ndarray] = []
        self.meshes: list[np.ndarray] = []
        self.own: list[int] = []  # the mesh of each generation
        self.names: list[str] = []  # the mesh file of each entry of self.meshes
        self.states: list[str] = []  # the generator's state after each piece (JSON)

    def add(self, name: str, mesh: trimesh.Trimesh, generated: trimesh.Trimesh | None) -> None:
        if generated is not None:
            self.own.append(len(self.meshes))
            self.generated.append(sample_surface(normalize_mesh(generated)[0], MATCH_SAMPLES, self.rng)[0])
        self.meshes.append(sample_surface(normalize_mesh(mesh)[0], MATCH_SAMPLES * ICP_TARGET_FACTOR, self.rng)[0])
        self.names.append(name)
        self.states.append(json.dumps(self.rng.bit_generator.state))
        if self.path is not None:
            self._save()

    def ranks(self) -> np.ndarray:
        """Each generation's rank of its own mesh by Chamfer after ICP (vat.metrics.match_ranks)."""
        return match_ranks(match_chamfer_matrix(self.generated, self.meshes, progress=True), self.own)

    def _save(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp.npz")
        empty = np.zeros((0, MATCH_SAMPLES, 3), np.float32)
        np.savez(temporary, generated=np.stack(self.generated) if self.generated else empty,
                 meshes=np.stack(self.meshes), own=np.asarray(self.own, np.int64), names=np.asarray(self.names),
                 states=np.asarray(self.states), options=np.asarray(self.options))
        os.replace(temporary, self.path)

    def restore(self, names: list[str]) -> None:
        """Take back the samples of the pieces `names` (the earlier run's, in its order) from `path`."""
        if not names:
            return
        if self.path is None or not self.path.is_file():
            raise VatError(f"cannot resume the match: the samples of that run are not in {self.path} (it ran with "
                           "--no-match, or without --json); resume with --no-match, or start again")
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                kept = len(names)
                if str(saved["options"]) != self.options:
                    raise ValueError(f"they come from a run with other options ({saved['options']})")
                if [str(n) for n in saved["names"][:kept]] != names:
                    raise ValueError("its pieces are not those of the file to resume")
                self.own = [int(o) for o in saved["own"] if o < kept]
                self.generated = list(saved["generated"][:len(self.own)])
                self.meshes, self.names = list(saved["meshes"][:kept]), names
                self.states = [str(s) for s in saved["states"][:kept]]
                self.rng.bit_generator.state = json.loads(self.states[-1])
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
            raise VatError(f"cannot resume the match from {self.path}: {exc}") from exc


def evaluate_generation(pipeline, directory: str | os.PathLike, limit: int | None = None, seed: int = 0,
                        resolution: int = PROTOCOL_RESOLUTION, settings: dict | None = None, match: bool = True,
                        search: int = 1, per_scale: bool = False, on_item=None, done: dict | None = None,
                        drafts: int = 0, draft_scales: int | None = None,
                        match_file: str | os.PathLike | None = None) -> dict:
    """eval-gen: every mesh's generation_item (with `search` samples each; with `per_scale`, every prefix
    of scales scored too: per_scale_scores, per_scale_summary; `on_item(result so far)`, if given, is called
    after each mesh: a long run can be read while it goes; `done`, an earlier (partial) result of the same
    options, resumes it: its meshes are kept and not generated again; with `match`, the run's MatchSamples
    are kept in `match_file` after each mesh and a resumed run reads them back, so that stopped and resumed it
    gives what it would have given in one go), and in the summary their means plus
    - the floor: the unconditional sample (null condition, the same seed and sampling settings; one
      mesh for the whole run, since nothing of the input reaches it) scored against every mesh, and
      cond_beats_uncond, the number of meshes whose conditional F@0.01 beats it;
    - with `match`, match_rate: the share of generations whose own mesh is the nearest by Chamfer
      after ICP among all evaluated meshes (chance: match_chance = 1 / N), and each item's
      match_rank. A generation with no surface is a miss (and its mesh stays among the N), as it is
      a loss in cond_beats_uncond; a mesh that cannot be read is left out of both. The N x N
      Chamfers are vat.metrics.match_chamfer_matrix's: ICP and Chamfer on MATCH_SAMPLES surface samples per generation (x ICP_TARGET_FACTOR per mesh), not the
      protocol's exact distances; only their ranking is used."""
    if drafts:
        draft_scales = resolve_draft_scales(draft_scales, pipeline.num_scales)
    options = {"seed": seed, "search": search, "per_scale": per_scale, "resolution": resolution, **(settings or {}),
               **({"drafts": drafts, "draft_scales": draft_scales} if drafts else {})}
    items = resumed_items(done, options, "eval-gen") if done else []
    finished = {item["mesh"] for item in items}
    samples = MatchSamples(seed, match_file, options) if match else None
    if samples is not None and items:
        samples.restore([item["mesh"] for item in items if _attempted(item)])
    floor = pipeline.generate_unconditional(
        seed=seed, resolution=resolution,
        **{k: v for k, v in (settings or {}).items() if k in UNGUIDED_SAMPLING}).mesh()
    if len(floor.faces) == 0:
        log.warning("the unconditional sample has no surface: no floor this run")
        floor = None
    for path in tqdm(mesh_files(directory, limit), desc="eval-gen", unit="mesh"):
        if str(path) in finished:
            continue
        try:
            item, mesh, generated = generation_item(pipeline, path, seed, resolution, settings, unconditional=floor,
                                                    search=search, per_scale=per_scale, drafts=drafts,
                                                    draft_scales=draft_scales)
        except VatError as exc:
            log.warning("%s: %s", path, exc)
            items.append({"mesh": str(path), "error": str(exc)})
            continue
        if generated is None:
            log.warning("%s: %s", path, item["error"])
        items.append(item)
        if samples is not None:  # saved before the JSON: a resumed run finds every piece of its JSON in them
            samples.add(str(path), mesh, generated)
        if on_item is not None:
            on_item({"summary": {"partial": True, **options}, "items": items})
    ok = [item for item in items if "error" not in item]
    attempted = [item for item in items if _attempted(item)]
    if match and ok:
        ranks = samples.ranks()
        for item, rank in zip(ok, ranks):
            item["match_rank"] = int(rank)
    summary = {**summarize(items), **per_scale_summary(ok)}
    if match and attempted:
        hits = int(np.sum(ranks == 1)) if ok else 0
        summary.update(match_rate=hits / len(attempted), match_chance=1.0 / len(attempted))
    if floor is not None:
        summary["cond_beats_uncond"] = sum(item["f_score"] > item["uncond_f_score"] for item in ok)
    summary["generation_failed"] = len(attempted) - len(ok)
    summary.update(options)
    return {"summary": summary, "items": items}
