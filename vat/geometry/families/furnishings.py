"""Sofas and beds, shelves and cabinets: part-based, in metres, Y up, front towards +z."""

from __future__ import annotations

import numpy as np
import trimesh

from vat.geometry.families.furniture import NUMBER_WORDS
from vat.geometry.families.parts import article, box, disc, join, on_floor, pick, rod, rounded_box

# ---------------------------------------------------------------------------- sofas and beds


def _feet(rng, width: float, depth: float, height: float) -> list:
    """Four short feet at the corners of a width x depth footprint, `height` tall."""
    if height <= 0:
        return []
    size = rng.uniform(0.04, 0.07)
    xs, zs = width / 2 - size, depth / 2 - size
    if rng.random() < 0.5:
        return [disc(size / 2, height + 0.01, 0, sx * xs, sz * zs) for sx in (-1, 1) for sz in (-1, 1)]
    return [on_floor((size, height + 0.01, size), sx * xs, 0, sz * zs) for sx in (-1, 1) for sz in (-1, 1)]


def _sofa(rng) -> tuple[list, dict]:
    seats = int(pick(rng, (1, 2, 3, 4), (0.15, 0.35, 0.35, 0.15)))
    p = {"kind": "sofa", "seats": seats, "arms": pick(rng, ("square", "rolled", "none"), (0.5, 0.3, 0.2)),
         "feet": rng.uniform(0.04, 0.15) if rng.random() < 0.6 else 0.0, "seat_width": rng.uniform(0.5, 0.7),
         "depth": rng.uniform(0.8, 1.0), "seat_height": rng.uniform(0.38, 0.48), "height": rng.uniform(0.7, 0.95),
         "arm_width": rng.uniform(0.12, 0.25), "back_cushions": rng.random() < 0.6,
         "chaise": seats >= 3 and rng.random() < 0.3}
    if seats == 1 and p["arms"] == "none":
        p["arms"] = "square"
    arm = p["arm_width"] if p["arms"] != "none" else 0.0
    width = seats * p["seat_width"] + 2 * arm
    y0, d, cushion = p["feet"], p["depth"], rng.uniform(0.1, 0.18)
    base_top = p["seat_height"] - cushion
    back_depth = rng.uniform(0.15, 0.25)
    p["width"] = width
    parts = [rounded_box((width, base_top - y0, d), (0, (y0 + base_top) / 2, 0), 0.03),
             rounded_box((width, p["height"] - y0, back_depth), (0, (y0 + p["height"]) / 2, -d / 2 + back_depth / 2),
                         0.05)]
    parts += _feet(rng, width, d, y0)
    arm_top = p["seat_height"] + rng.uniform(0.12, 0.25)
    for sx in (-1, 1) if arm else ():
        x = sx * (width / 2 - arm / 2)
        if p["arms"] == "rolled":
            parts.append(rounded_box((arm, arm_top - y0 - arm / 2, d), (x, (y0 + arm_top - arm / 2) / 2, 0), 0.03))
            parts.append(rod(arm / 2 + 0.02, (x, arm_top - arm / 2, -d / 2), (x, arm_top - arm / 2, d / 2)))
        else:
            parts.append(rounded_box((arm, arm_top - y0, d), (x, (y0 + arm_top) / 2, 0), 0.04))
    seat_depth = d - back_depth
    inner = width - 2 * arm
    for k in range(seats):
        x = -inner / 2 + (k + 0.5) * p["seat_width"]
        long = p["chaise"] and k == seats - 1
        extra = rng.uniform(0.5, 0.7) if long else 0.0
        z = -d / 2 + back_depth + (seat_depth + extra) / 2
        parts.append(rounded_box((p["seat_width"] - 0.01, cushion, seat_depth + extra), (x, base_top + cushion / 2, z),
                                 0.04))
        if long:
            centre = (x, (y0 + base_top) / 2, d / 2 + extra / 2)
            parts.append(rounded_box((p["seat_width"], base_top - y0, extra), centre, 0.03))
        if p["back_cushions"]:
            c = rounded_box((p["seat_width"] - 0.01, p["height"] - p["seat_height"] - 0.02, 0.16), radius=0.05)
            c.apply_transform(trimesh.transformations.rotation_matrix(-0.18, (1, 0, 0)))
            c.apply_translation((x, (p["seat_height"] + p["height"]) / 2, -d / 2 + back_depth + 0.06))
            parts.append(c)
    return parts, p


def _sofa_caption(p) -> str:
    noun = "armchair" if p["seats"] == 1 else f"{NUMBER_WORDS[p['seats']]}-seat sofa"
    if p["chaise"]:
        noun = f"L-shaped {noun}"
    extras = ["no arms" if p["arms"] == "none" else "" if p["seats"] == 1 and p["arms"] == "square"
              else f"{p['arms']} arms", "back cushions" if p["back_cushions"] else "",
              "short legs" if p["feet"] > 0 else ""]
    extras = [e for e in extras if e]
    return article(f"upholstered {noun}" if p["seats"] == 1 else noun) + (f" with {join(extras)}" if extras else "")


def _bed(rng) -> tuple[list, dict]:
    size = pick(rng, ("single", "double", "king-size"), (0.35, 0.4, 0.25))
    p = {"kind": "bed", "size": size, "width": {"single": rng.uniform(0.9, 1.05), "double": rng.uniform(1.35, 1.6),
                                                 "king-size": rng.uniform(1.75, 2.0)}[size],
         "length": rng.uniform(1.95, 2.15), "frame": rng.uniform(0.15, 0.4), "mattress": rng.uniform(0.15, 0.3),
         "headboard": rng.uniform(0.8, 1.3), "footboard": rng.random() < 0.35,
         "pillows": 1 if size == "single" else int(rng.integers(1, 3)), "legs": rng.random() < 0.5}
    w, length = p["width"], p["length"]
    legs = rng.uniform(0.08, 0.2) if p["legs"] else 0.0
    frame = p["frame"]
    top = frame + p["mattress"]
    board = rng.uniform(0.04, 0.1)
    parts = [on_floor((w + 0.04, frame - legs, length), 0, legs, 0), *_feet(rng, w, length, legs),
             rounded_box((w, p["mattress"], length - board), (0, frame + p["mattress"] / 2, board / 2), 0.05),
             on_floor((w + 0.06, p["headboard"], board), 0, 0, -length / 2)]
    if p["footboard"]:
        parts.append(on_floor((w + 0.06, top + rng.uniform(0.0, 0.25), board), 0, 0, length / 2))
    for k in range(p["pillows"]):
        pw = w / p["pillows"] - 0.08
        x = -w / 2 + (k + 0.5) * w / p["pillows"]
        parts.append(rounded_box((pw, 0.12, 0.4), (x, top + 0.05, -length / 2 + board + 0.25), 0.05))
    return parts, p


def _bed_caption(p) -> str:
    boards = "a headboard and a footboard" if p["footboard"] else (
        "a tall headboard" if p["headboard"] > 1.1 else "a headboard")
    pillows = f"{NUMBER_WORDS.get(p['pillows'], 'a')} pillows" if p["pillows"] > 1 else "a pillow"
    return f"{article(p['size'] + ' bed')} with {join([boards, pillows])}" + (" on legs" if p["legs"] else "")


def sofa_bed(rng: np.random.Generator):
    if rng.random() < 0.55:
        parts, p = _sofa(rng)
        return parts, _sofa_caption(p), p
    parts, p = _bed(rng)
    return parts, _bed_caption(p), p


# ---------------------------------------------------------------------------- shelves and cabinets

_STORAGE_SIZES = {  # width, height, depth ranges in metres
    "bookcase": ((0.6, 1.2), (0.8, 2.2), (0.25, 0.4)),
    "cabinet": ((0.5, 1.0), (0.6, 1.2), (0.35, 0.6)),
    "chest of drawers": ((0.6, 1.2), (0.7, 1.3), (0.4, 0.55)),
    "wardrobe": ((0.8, 2.0), (1.8, 2.3), (0.55, 0.65)),
    "sideboard": ((1.2, 2.0), (0.7, 0.9), (0.4, 0.5)),
}


def _handle(rng_kind: str, x: float, y: float, z: float, vertical: bool) -> object:
    if rng_kind == "knob":
        return rod(0.02, (x, y, z), (x, y, z + 0.035))
    length = 0.12
    return box((0.02, length, 0.025) if vertical else (length, 0.02, 0.025), (x, y, z + 0.0125))


def _fronts(rng, p, x0: float, x1: float, y0: float, y1: float, z: float) -> list:
    """Doors (p["doors"] side by side) or drawers (p["rows"] x p["columns"]) between x0..x1, y0..y1."""
    gap, parts = 0.006, []
    if p["front"] == "doors":
        width = (x1 - x0) / p["doors"]
        for k in range(p["doors"]):
            left = x0 + k * width
            parts.append(box((width - gap, y1 - y0 - gap, 0.02), (left + width / 2, (y0 + y1) / 2, z + 0.01)))
            hinge_right = k % 2 == 0 and p["doors"] > 1
            hx = left + width - 0.05 if hinge_right else left + 0.05
            parts.append(_handle(p["handles"], hx, min(y1 - 0.15, 1.0), z + 0.02, True))
        return parts
    height, width = (y1 - y0) / p["rows"], (x1 - x0) / p["columns"]
    for r in range(p["rows"]):
        for c in range(p["columns"]):
            cx, cy = x0 + (c + 0.5) * width, y0 + (r + 0.5) * height
            parts.append(box((width - gap, height - gap, 0.02), (cx, cy, z + 0.01)))
            parts.append(_handle(p["handles"], cx, cy, z + 0.02, False))
    return parts


def _bookcase(rng, p, plinth: float) -> list:
    w, h, d, t = p["width"], p["height"], p["depth"], p["board"]
    parts = [on_floor((t, h, d), sx * (w / 2 - t / 2)) for sx in (-1, 1)]
    parts += [on_floor((w, t, d), 0, y) for y in (plinth, h - t)]
    if plinth > 0:
        parts.append(on_floor((w, plinth, t), 0, 0, d / 2 - t / 2 - 0.01))
    if p["back_panel"]:
        parts.append(on_floor((w, h, 0.012), 0, 0, -d / 2 + 0.006))
    for y in np.linspace(plinth, h - t, p["shelves"] + 1)[1:-1]:
        parts.append(on_floor((w - t, t, d - 0.02), 0, y, -0.01))
    return parts


def shelf_cabinet(rng: np.random.Generator):
    kind = pick(rng, tuple(_STORAGE_SIZES), (0.3, 0.2, 0.2, 0.15, 0.15))
    widths, heights, depths = _STORAGE_SIZES[kind]
    p = {"kind": kind, "width": rng.uniform(*widths), "height": rng.uniform(*heights), "depth": rng.uniform(*depths),
         "board": rng.uniform(0.022, 0.035), "back_panel": rng.random() < 0.6,
         "front": "drawers" if kind == "chest of drawers" else "open" if kind == "bookcase" else "doors",
         "doors": int(rng.integers(1, 3)) if kind == "cabinet" else int(rng.integers(2, 4)),
         "rows": int(rng.integers(3, 7)), "columns": int(pick(rng, (1, 2), (0.6, 0.4))),
         "handles": pick(rng, ("knob", "bar")), "base": pick(rng, ("plinth", "legs"), (0.6, 0.4))}
    if kind == "bookcase":
        p["base"] = "plinth"
    p["shelves"] = max(2, int(round(p["height"] / rng.uniform(0.3, 0.4))))
    w, h, d = p["width"], p["height"], p["depth"]
    lift = rng.uniform(0.06, 0.2) if p["base"] == "legs" else 0.0
    plinth = rng.uniform(0.04, 0.1)
    if kind == "bookcase":
        parts = _bookcase(rng, p, plinth)
    else:
        parts = [on_floor((w, h - lift, d), 0, lift), *_feet(rng, w, d, lift)]
        parts += _fronts(rng, p, -w / 2 + 0.02, w / 2 - 0.02, lift + 0.03, h - 0.03, d / 2)
    fronts = {"open": f"{NUMBER_WORDS.get(p['shelves'], 'many')} shelves",
              "doors": "a door" if p["doors"] == 1 else f"{NUMBER_WORDS[p['doors']]} doors",
              "drawers": f"{NUMBER_WORDS.get(p['rows'] * p['columns'], 'many')} drawers"}
    size = "tall " if h > 1.6 and kind in ("bookcase", "cabinet") else "low " if h < 1.0 and kind == "bookcase" else ""
    extras = [fronts[p["front"]], "" if p["front"] == "open" else f"{p['handles']} handles",
              "legs" if lift else ""]
    return parts, f"{article(size + kind)} with {join([e for e in extras if e])}", p
