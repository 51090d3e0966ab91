"""The `vat` command line (also `python -m vat`): see `vat --help` and the README.

Every evaluating command takes `--json PATH` and writes {"summary": {...}, "items": [...]}.
Errors that come from bad input are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vat import __version__
from vat.errors import VatError
from vat.preprocess_config import DEFAULT_PREPROCESS
from vat.sampling_config import CFG_SCHEDULES, DEFAULT_SAMPLING
from vat.ui import (BACKGROUND_METHODS, DEFAULT_AVERAGE, DEFAULT_DRAFT_SCALES, DEFAULT_GENERATE_SEARCH, DEFAULT_REFINE,
                    DEFAULT_RESOLUTION, DEFAULT_SEARCH, MAX_AVERAGE, MAX_RESOLUTION, MAX_SEED, MIN_RESOLUTION,
                    PROTOCOL_RESOLUTION, RESOLUTIONS, size_change, stage_times)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints"
APP = Path(__file__).resolve().parent.parent / "app.py"  # the demo, which `vat bench --soak` launches


def _mesh_output(path: str) -> str:
    """The -o of a command that writes a mesh: its suffix is checked before any model loads."""
    from vat.geometry import EXPORT_FORMATS

    if Path(path).suffix.lower().lstrip(".") not in EXPORT_FORMATS:
        raise argparse.ArgumentTypeError(f"cannot write {Path(path).name!r}: expected one of "
                                         f"{', '.join('.' + f for f in EXPORT_FORMATS)}")
    return path


def _whole_number(text: str, what: str, low: int, high: int, hint: str = "") -> int:
    """`text` as a whole number in [low, high]; argparse's one-line error otherwise."""
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise argparse.ArgumentTypeError(f"{what} must be a whole number from {low} to {high:,}{hint}, got {text!r}")
    return number


def _resolution(text: str) -> int:
    """--resolution: grid cells per side, checked before any model loads."""
    return _whole_number(text, "the resolution", MIN_RESOLUTION, MAX_RESOLUTION,
                         f" grid cells per side (the demo offers {', '.join(map(str, RESOLUTIONS))})")


def _resolution_option(parser: argparse.ArgumentParser, default: int) -> None:
    why = "the evaluation protocol's grid" if default == PROTOCOL_RESOLUTION else "the demo's Standard"
    parser.add_argument("--resolution", type=_resolution, default=default, metavar="N",
                        help=f"marching-cubes grid cells per side, {MIN_RESOLUTION} to {MAX_RESOLUTION} (default "
                             f"{default}: {why}; the demo offers {', '.join(map(str, RESOLUTIONS))}; 512 takes minutes)")


def _seed_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--seed", type=lambda text: _whole_number(text, "the seed", 0, MAX_SEED), default=0,
                        metavar="SEED", help=f"{help} (0 to {MAX_SEED}; default 0)")


def _search_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search", type=int, default=DEFAULT_SEARCH, metavar="K",
                        help="encode K samplings of the surface and keep the tokens that decode closest to the mesh "
                             f"(default {DEFAULT_SEARCH}; 1: one sampling, fastest)")


def _refine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refine", type=int, default=DEFAULT_REFINE, metavar="N",
                        help="fit the tokens to the mesh: up to N optimisation steps of the latent through the decoder, "
                             "kept only where they decode closer to the mesh (same bytes, slower encoding; "
                             f"default {DEFAULT_REFINE}; 0: off)")


def _average_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--average", type=lambda text: _whole_number(text, "--average", 1, MAX_AVERAGE),
                        default=DEFAULT_AVERAGE, metavar="A",
                        help="encode each candidate from the mean latent of A samplings of the surface: less of "
                             f"one sampling's noise, same bytes (1 to {MAX_AVERAGE}; default {DEFAULT_AVERAGE})")


def _write_json(path: str | None, summary: dict, items: list[dict]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"summary": summary, "items": items}, indent=2) + "\n")


def _report(args: argparse.Namespace, result: dict, width: int, list_format: str) -> int:
    """An evaluation's summary, one key a line (lists of numbers in `list_format`), and its --json."""
    for key, value in result["summary"].items():
        if isinstance(value, list):
            value = " ".join(list_format.format(v) if isinstance(v, float) else str(v) for v in value)
        print(f"{key:{width}s} {value:.4f}" if isinstance(value, float) else f"{key:{width}s} {value}")
    _write_json(args.json, result["summary"], result["items"])
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from vat.geometry import load_mesh
    from vat.metrics import compare_meshes, placement_hint

    reference, other = load_mesh(args.reference), load_mesh(args.other)
    result = compare_meshes(
        reference, other, icp=args.icp, normalize=args.normalize, samples=args.samples, seed=args.seed
    )
    summary = {"f_score": result["f_score"], "chamfer": result["chamfer"]}
    hint = placement_hint(reference, other, args.normalize)
    if hint:
        hint += "; if they are one shape placed or scaled differently, compare with --normalize each"
    item = {"reference": str(args.reference), "other": str(args.other), "icp": args.icp, **result,
            "placement_hint": hint}
    print(f"F-score@0.01 {result['f_score']:.3f}   Chamfer-L1 {result['chamfer']:.5f}"
          f"   (precision {result['precision']:.3f}, recall {result['recall']:.3f})")
    if hint:
        print(f"note: {hint}")
    _write_json(args.json, summary, [item])
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from vat.bench import (bench_app_memory, bench_codec, bench_extraction, bench_image, bench_image_to_mesh,
                           bench_machine, bench_models, bench_sampling)
    from vat.geometry import load_mesh

    machine = bench_machine()
    extraction = bench_extraction(resolution=args.resolution, coarse_resolution=args.coarse_resolution)
    items = [{"bench": "machine", **machine}, {"bench": "extraction", **extraction}]
    summary = {**machine, **{k: extraction[k] for k in ("extract_query_ratio", "extract_chamfer_diff",
                                                         "extract_time_ratio")}}
    if not args.skip_generation:
        pipeline, weights = bench_models(args.checkpoint)
        image = bench_image(args.image)
        from vat.preprocess import preprocess_image

        tokens, text = pipeline.encoders.encode(images=[preprocess_image(image).image], texts=None)
        sampling = bench_sampling(pipeline.generator, pipeline.codec.tokenizer.quantizer, image_tokens=tokens,
                                  text=text, repeats=args.repeats)
        end_to_end = bench_image_to_mesh(pipeline, image, resolution=args.resolution, repeats=args.repeats)
        from vat.geometry.procedural import random_shape

        mesh = load_mesh(args.mesh) if args.mesh else random_shape(0).mesh
        codec = bench_codec(pipeline.codec, mesh, resolution=args.resolution, repeats=args.repeats)
        items += [{"bench": "sampling", "weights": weights, **sampling},
                  {"bench": "image_to_mesh", "weights": weights, **end_to_end},
                  {"bench": "codec", "weights": weights, "mesh": args.mesh or "procedural shape 0", **codec}]
        for part, keys in ((sampling, ("kv_cache_speedup", "sample_cached_s", "sample_uncached_s")),
                           (end_to_end, ("image_to_mesh_s", "image_to_mesh_one_s")),
                           (codec, ("encode_s", "encode_one_s", "decode_s", "encode_search_s"))):
            summary.update({key: part[key] for key in keys})
        summary.update(codec_bytes=codec["bytes"], weights=weights)
    if args.soak:
        if not APP.is_file():
            raise VatError(f"the soak launches the demo, {APP}, which is not there (run it from a clone of the "
                           "repository)")
        soak = bench_app_memory(APP, args.checkpoint, bench_image(args.image), generates=args.soak,
                                sessions=args.soak_sessions, max_sessions=args.soak_max_sessions,
                                resolution=args.resolution)
        items.append({"bench": "app_memory", **soak})
        summary.update({k: v for k, v in soak.items() if k.startswith("app_")})
    for item in items:
        for key, value in item.items():
            print(f"{key:28s} {value:.4g}" if isinstance(value, float) else f"{key:28s} {value}")
    _write_json(args.json, summary, items)
    return 0


def _generation_settings(args: argparse.Namespace) -> dict:
    return dict(cfg=args.cfg, cfg_schedule=args.cfg_schedule, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, temperature_last=args.temperature_last)


def _search(args: argparse.Namespace) -> int:
    """--search as given, else the default for an image (DEFAULT_GENERATE_SEARCH) and 1 without one."""
    if args.search is not None:
        return args.search
    return DEFAULT_GENERATE_SEARCH if getattr(args, "image", True) else 1


def _cmd_generate(args: argparse.Namespace) -> int:
    from vat.geometry import export_mesh
    from vat.pipeline import Pipeline

    if args.image is None and not args.text:
        raise VatError("give an image, --text, or both")
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    generation = pipeline.generate(image=args.image, text=args.text, seed=args.seed, resolution=args.resolution,
                                   remove_background="none" if args.no_background_removal else "auto",
                                   foreground_ratio=args.foreground_ratio, search=_search(args),
                                   drafts=args.drafts, draft_scales=args.draft_scales, **_generation_settings(args))
    if generation.preprocess_warning:
        print(f"vat generate: warning: {generation.preprocess_warning}", file=sys.stderr)
    mesh = generation.mesh(args.scale)
    export_mesh(mesh, args.output)
    scales = args.scale or generation.num_scales
    if args.vat:
        Path(args.vat).write_bytes(generation.vat(scales))
    print(f"{args.output}: {len(mesh.faces):,} faces from {generation.tokens_at(scales):,} tokens "
          f"({scales} of {generation.num_scales} scales), seed {generation.seed}")
    searched, drafts = generation.settings["search"], generation.settings.get("drafts", 0)
    if searched > 1 or drafts:
        tried = drafts or searched
        kept = f", {searched} of them finished" if drafts else ""
        print(f"  the best outline of {tried} samples (seeds {args.seed} to {args.seed + tried - 1}{kept}); "
              f"this sample alone: --seed {generation.seed} --search 1")
        fits = ", ".join(f"{s.seed} {s.outline_score:.2f}" for s in generation.samples_by_fit())
        print(f"  outline fit (IoU) by seed, best first: {fits}")
    if generation.preprocess_method:
        print(f"  background: {BACKGROUND_METHODS.get(generation.preprocess_method, generation.preprocess_method)}")
    print(f"  time: {stage_times(generation.timings)}")
    return 0


def _cmd_eval_gen(args: argparse.Namespace) -> int:
    from vat.evaluate import evaluate_generation
    from vat.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(args.checkpoint)
    result = evaluate_generation(pipeline, args.meshes, limit=args.limit, seed=args.seed, resolution=args.resolution,
                                 settings=pipeline.sampling_with(**_generation_settings(args)).to_dict(),
                                 match=not args.no_match, search=_search(args), per_scale=args.per_scale,
                                 drafts=args.drafts, draft_scales=args.draft_scales,
                                 done=_resume_json(args), match_file=_match_file(args),
                                 on_item=lambda partial: _write_json(args.json, partial["summary"], partial["items"]))
    return _report(args, result, 20, "{:.3f}")


def _match_file(args: argparse.Namespace) -> Path | None:
    """eval-gen's match samples, kept beside --json (OUT.match.npz) so that --resume can finish the match."""
    return Path(args.json).with_suffix(".match.npz") if args.json and not args.no_match else None


def _codec(args: argparse.Namespace):
    from vat.pipeline import MeshCodec

    return MeshCodec.from_pretrained(args.checkpoint)


def _cmd_encode(args: argparse.Namespace) -> int:
    from vat.geometry import load_mesh

    codec = _codec(args)
    mesh = load_mesh(args.mesh)
    if args.bytes is not None and args.scales is not None:
        raise VatError("give --scales or --bytes, not both")
    encoded = codec.encode(mesh, scales=args.scales, seed=args.seed, search=args.search, max_bytes=args.bytes,
                           raw=True if args.raw else None, refine=args.refine, average=args.average)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encoded.data)
    size = Path(args.mesh).stat().st_size
    coding = "entropy-coded" if encoded.entropy_coded else "raw tokens"
    print(f"{args.mesh}: {encoded.num_tokens:,} tokens in {len(encoded.indices)} scales -> {out} ({coding}); "
          f"{size_change(size, len(encoded.data))}")
    if args.verbose and encoded.refined is not None:
        r = encoded.refined
        print(f"refinement: {r.steps} steps, IoU at the encoder's check points {r.iou_before:.3f} -> {r.iou_after:.3f}"
              f" ({'refined tokens kept' if r.kept else 'no better: the unrefined tokens kept'})")
    if args.verbose and codec.prior is not None:
        bits = codec.prior.bits(encoded.indices)
        print("bits per token by scale (the prior's information content): "
              + " ".join(f"{b:.2f}" for b in bits)
              + f"; mean {sum(b * len(i) for b, i in zip(bits, encoded.indices)) / encoded.num_tokens:.2f}")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from vat.codec import CodecError
    from vat.geometry import export_mesh

    codec = _codec(args)
    try:
        data = Path(args.vat_file).read_bytes()
    except OSError as exc:
        raise CodecError(f"cannot read {args.vat_file}: {exc.strerror}") from exc
    tokens = codec.read_file(data)
    mesh = codec.decode_mesh(list(tokens.indices), scales=args.scale, resolution=args.resolution, progress=True)
    where = "in the unit cube"
    if tokens.placement is not None and not args.unit_cube:
        mesh, where = tokens.placement.apply(mesh), "back in place"
    export_mesh(mesh, args.output)
    print(f"{args.vat_file}: {args.scale or tokens.num_scales} of {codec.num_scales} scales -> {args.output} "
          f"({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, {where})")
    return 0


def _resume_json(args: argparse.Namespace) -> dict | None:
    """--resume: the earlier result at --json, if there is one (none yet: a fresh start)."""
    if not args.resume:
        return None
    if not args.json:
        raise VatError("--resume needs --json PATH: the file of the run to resume")
    try:
        return json.loads(Path(args.json).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise VatError(f"cannot resume from {args.json}: {exc}") from exc


def _cmd_eval_recon(args: argparse.Namespace) -> int:
    from vat.evaluate import evaluate_reconstruction

    result = evaluate_reconstruction(_codec(args), args.meshes, limit=args.limit, resolution=args.resolution,
                                     baselines=not args.no_baselines, seed=args.seed, search=args.search,
                                     raw=True if args.raw else None, max_bytes=args.bytes, out_dir=args.out,
                                     refine=args.refine, average=args.average, done=_resume_json(args),
                                     on_item=lambda partial: _write_json(args.json, partial["summary"], partial["items"]))
    return _report(args, result, 16, "{:.3g}")


def _cmd_render(args: argparse.Namespace) -> int:
    from vat.geometry.render import load_for_render, render_views, save_views

    views = render_views(load_for_render(args.mesh), views=args.views, size=args.size, seed=args.seed)
    save_views(views, args.output)
    print(f"{args.mesh}: {len(views)} views of {args.size}x{args.size} px (fov {views[0].fov} deg, distance "
          f"{views[0].distance:.3f}) -> {args.output}/ (RGBA PNGs + cameras.json)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numpy
    import torch
    import trimesh

    checkpoint = Path(args.checkpoint)
    has_weights = checkpoint.is_dir() and any(checkpoint.glob("*.safetensors"))
    lines = {
        "vat": __version__,
        "python": platform.python_version(),
        "torch": f"{torch.__version__} (cuda available: {torch.cuda.is_available()})",
        "numpy": numpy.__version__,
        "trimesh": trimesh.__version__,
        "checkpoint": f"{checkpoint} ({'weights found' if has_weights else 'no weights yet'})",
    }
    for key, value in lines.items():
        print(f"{key:11s} {value}")
    return 0


def _command(sub, name: str, help: str, handler, evaluating: bool = False) -> argparse.ArgumentParser:
    """A subcommand with the options every command takes (--checkpoint; --json for the evaluating ones)."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), metavar="DIR_OR_HUB_ID",
                   help="model folder or hub id (default: the shipped checkpoints/)")
    if evaluating:
        p.add_argument("--json", metavar="PATH", help="write {summary, items} as JSON here")
    return p


def _tool_commands(sub) -> None:
    """compare, bench, info."""
    p = _command(sub, "compare", "F-score@0.01 and Chamfer-L1 of two meshes, on the pinned protocol", _cmd_compare,
                 True)
    p.add_argument("reference", help="reference (ground-truth) mesh file")
    p.add_argument("other", help="mesh file to score against the reference")
    p.add_argument("--icp", action="store_true", help="rigidly align OTHER to REFERENCE first (generation)")
    p.add_argument("--normalize", choices=("reference", "each", "none"), default="reference",
                   help="reference: put REFERENCE in the unit cube and move OTHER with it (default); "
                        "each: normalise both independently; none: use the files' coordinates")
    p.add_argument("--samples", type=int, default=10_000, help="surface samples per mesh (protocol: 10000)")
    _seed_option(p, "seed of the surface samples")

    p = _command(sub, "bench", "timings: coarse-to-fine vs dense extraction, sampling with/without the kv-cache, "
                               "image to mesh", _cmd_bench, True)
    _resolution_option(p, PROTOCOL_RESOLUTION)
    p.add_argument("--coarse-resolution", type=int, default=32, help="first grid of coarse-to-fine")
    p.add_argument("--image", help="input image of the image-to-mesh timing (default: a render of the bench shape)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    p.add_argument("--mesh", help="mesh of the encode/decode timing (default: procedural shape 0)")
    p.add_argument("--skip-generation", action="store_true", help="only the extraction bench (and the soak)")
    p.add_argument("--soak", type=int, default=0, metavar="N",
                   help="the demo's memory: N generates in one session, then one in each of --soak-sessions new "
                        "sessions, through app.py launched in a process of its own, at --resolution (64, 128 or 256); "
                        "prints RSS and MB per generate (default 0: skip)")
    p.add_argument("--soak-sessions", type=int, metavar="M", help="new sessions in the soak (default: N)")
    p.add_argument("--soak-max-sessions", type=int, metavar="K",
                   help="the app's --max-sessions in the soak (default: the app's); with K <= M the soak also "
                        "reports the growth per generate once the app holds K sessions")

    _command(sub, "info", "versions, device and checkpoint", _cmd_info)


# The formats vat.geometry.io.LOAD_FORMATS reads (spelled out here: `vat --help` does not import trimesh).
MESH_FILE_HELP = "mesh file (.obj .ply .stl .glb .gltf .off, or a game model: .md2 .pmd .spm .g3d)"


def _codec_commands(sub) -> None:
    """encode, decode."""
    p = _command(sub, "encode", "mesh -> .vat token file (prints tokens, bytes, compression ratio)", _cmd_encode)
    p.add_argument("mesh", help=MESH_FILE_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT.vat")
    p.add_argument("--scales", "--scale", dest="scales", type=int,
                   help="store only the first S scales (smaller, coarser)")
    p.add_argument("--bytes", type=int, metavar="B", help="store the longest prefix of scales that fits in B bytes")
    p.add_argument("--raw", action="store_true",
                   help="store the tokens bit-packed, not entropy-coded with the checkpoint's generator (larger; "
                        "decodes with the tokenizer alone, on any machine; by default the smaller of the two)")
    _seed_option(p, "seed of the surface sampling")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print the refinement's gain and the bits per token of each scale")
    _search_option(p)
    _refine_option(p)
    _average_option(p)

    p = _command(sub, "decode", ".vat token file -> mesh", _cmd_decode)
    p.add_argument("vat_file", metavar="IN.vat")
    p.add_argument("-o", "--output", required=True, metavar="OUT.{glb,obj,stl,ply}", type=_mesh_output)
    p.add_argument("--scale", "--scales", dest="scale", type=int,
                   help="decode from the first S scales only (coarse-to-fine)")
    _resolution_option(p, DEFAULT_RESOLUTION)
    p.add_argument("--unit-cube", action="store_true",
                   help="leave the mesh in the unit cube [-0.5, 0.5]^3 (default: where the encoded mesh was)")


def _sampling_options(p: argparse.ArgumentParser, resolution: int) -> None:
    """The generator's sampling settings (defaults: the checkpoint's, else vat.sampling_config's), --seed,
    --resolution and --search."""
    _seed_option(p, "sampling seed (the same seed gives the same mesh)")
    unset = " (default: the checkpoint's sampling_config.json, else %s)"
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (0: off)" + unset % DEFAULT_SAMPLING.cfg)
    p.add_argument("--cfg-schedule", choices=CFG_SCHEDULES,
                   help="guidance per scale: linear (VAR: none at the first scale, --cfg at the last) or "
                        "constant (--cfg at every scale)" + unset % DEFAULT_SAMPLING.cfg_schedule)
    p.add_argument("--temperature", type=float,
                   help="softmax temperature (at the first scale)" + unset % DEFAULT_SAMPLING.temperature)
    p.add_argument("--temperature-last", type=float, metavar="T",
                   help="temperature at the last scale, reached linearly from --temperature (cooler fine scales "
                        "keep the surface whole; give --temperature's value for a constant one)"
                   + unset % (DEFAULT_SAMPLING.temperature_last or "--temperature"))
    p.add_argument("--top-k", type=int,
                   help="sample among the k likeliest tokens (0: all)" + unset % DEFAULT_SAMPLING.top_k)
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (0: off)" + unset % DEFAULT_SAMPLING.top_p)
    _resolution_option(p, resolution)
    p.add_argument("--search", type=int, metavar="K",
                   help="sample K meshes (seeds SEED .. SEED+K-1) and keep the one whose outline best fits the "
                        f"image's foreground from some view (default {DEFAULT_GENERATE_SEARCH}; 1: one sample, "
                        "fastest; without an image: 1)")
    p.add_argument("--drafts", type=int, default=0, metavar="M",
                   help="first sample only the coarse scales (--draft-scales) of M seeds (SEED .. SEED+M-1) and "
                        "finish the --search K of them whose outline fits the image best (M > K; default 0: none)")
    p.add_argument("--draft-scales", type=int, metavar="S",
                   help=f"scales of a draft (default {DEFAULT_DRAFT_SCALES}, at most all but the last)")


def _generate_command(sub) -> None:
    p = _command(sub, "generate", "image (and/or text) -> mesh", _cmd_generate)
    p.add_argument("image", nargs="?", help="input image (PNG/JPEG/WebP; alpha is used as the mask when present)")
    p.add_argument("--text", help="text prompt (with or without an image)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.{glb,obj,stl,ply}", type=_mesh_output)
    p.add_argument("--vat", metavar="OUT.vat", help="also write the generated tokens as a .vat file")
    p.add_argument("--scale", "--scales", dest="scale", type=int,
                   help="decode from the first S scales only (coarse-to-fine)")
    p.add_argument("--foreground-ratio", type=float, default=DEFAULT_PREPROCESS.foreground_ratio,
                   help="object size in the recentred input (default %(default)s: its longer side, as a share of "
                        "the square's)")
    p.add_argument("--no-background-removal", action="store_true", help="use the image as it is")
    _sampling_options(p, DEFAULT_RESOLUTION)


def _meshes_options(p) -> None:
    """--meshes and --limit, and --resume."""
    p.add_argument("--meshes", required=True, metavar="DIR", help="folder of meshes (recursive)")
    p.add_argument("--limit", type=int, help="evaluate only the first N meshes (sorted by path)")
    p.add_argument("--resume", action="store_true", help="keep the meshes already in --json (a stopped "
                   "run of the same options) and do the rest")


def _evaluation_commands(sub) -> None:
    """eval-recon, eval-gen."""
    p = _command(sub, "eval-recon", "tokenizer reconstruction + Draco/voxel baselines at the same bytes",
                 _cmd_eval_recon, True)
    _meshes_options(p)
    _resolution_option(p, PROTOCOL_RESOLUTION)
    _search_option(p)
    p.add_argument("--bytes", type=int, metavar="B", help="store the longest prefix of scales that fits in B bytes")
    p.add_argument("--raw", action="store_true", help="bit-packed tokens, not entropy-coded (as vat encode --raw)")
    _refine_option(p)
    _average_option(p)
    p.add_argument("--out", metavar="DIR", help="keep the .vat files here (default: a temporary folder)")
    p.add_argument("--no-baselines", action="store_true", help="skip Draco and voxel")
    _seed_option(p, "seed of the surface sampling and the queries")

    p = _command(sub, "eval-gen", "render a view of each mesh, generate from it, ICP-align, F-score and Chamfer; "
                 "the unconditional sample's scores (the floor) and the match rate", _cmd_eval_gen, True)
    _meshes_options(p)
    p.add_argument("--no-match", action="store_true",
                   help="skip the match rate (N x N ICPs on 512-point samples, about 0.1 s each)")
    p.add_argument("--per-scale", action="store_true",
                   help="also decode every prefix of scales (at --resolution) and score it: f_score_per_scale, "
                        "f_score_005_per_scale, best_scale, full_is_best, distinct_prefixes_per_scale "
                        "(about 1 s more per scale and mesh at 128)")
    _sampling_options(p, PROTOCOL_RESOLUTION)


def _render_command(sub) -> None:
    p = _command(sub, "render", "render a mesh from the paper's 24-view orbit: RGBA PNGs + cameras.json", _cmd_render)
    p.add_argument("mesh", help=MESH_FILE_HELP + "; textures and colours are kept")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="writes DIR/000.png ... and DIR/cameras.json")
    p.add_argument("--views", type=int, default=24, help="views on the orbit (protocol: 24)")
    p.add_argument("--size", type=int, default=512, help="image width and height in pixels (protocol: 512)")
    _seed_option(p, "seed of the azimuth start and the elevations")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vat", description="vat: the Variational Tokenizer as a 3D codec, and "
                                                             "image-to-3D generation.")
    parser.add_argument("--version", action="version", version=f"vat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in (_tool_commands, _codec_commands, _generate_command, _evaluation_commands, _render_command):
        add_commands(sub)  # in this order: `vat --help` lists them so
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except VatError as exc:
        print(f"vat {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `vat bench | head`: the reader has gone; stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141  # what a shell reports for a command ended by SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
