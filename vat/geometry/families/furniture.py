"""Chairs and stools, tables and desks: part-based, in metres, Y up, front towards +z."""

from __future__ import annotations

import numpy as np

from vat.geometry.families.parts import article, box, disc, hull, join, on_floor, pick, rod

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _leg(material: str, thickness: float, top, bottom) -> object:
    """A leg from `top` to `bottom` (3D points): a round metal tube or a square wooden post."""
    if material == "metal":
        return rod(thickness / 2, bottom, top)
    half = thickness / 2
    top, bottom = np.asarray(top, float), np.asarray(bottom, float)
    square = np.array([[sx, 0, sz] for sx in (-half, half) for sz in (-half, half)])
    return hull(np.concatenate([top + square, bottom + square * 0.8]))  # a slight taper


# ---------------------------------------------------------------------------- chairs and stools


def _chair_legs(rng, p) -> list:
    """The base under the seat: p["base"] in four legs, three legs, pedestal or sled."""
    h, w, d, t, m = p["seat_height"], p["seat_width"], p["seat_depth"], p["leg"], p["material"]
    splay = rng.uniform(0.0, 0.06) if p["back"] == "none" else rng.uniform(0.0, 0.02)
    if p["base"] == "four legs":
        hx, hz = (w / 2 - t, d / 2 - t) if p["seat_shape"] == "square" else ((w / 2 - t) * 0.7,) * 2
        parts = []
        for sx in (-1, 1):
            for sz in (-1, 1):
                top = (sx * hx, h - p["seat_thickness"] / 2, sz * hz)  # buried in the seat
                parts.append(_leg(m, t, top, (top[0] + sx * splay, 0, top[2] + sz * splay)))
        if p["stretchers"]:
            y = rng.uniform(0.12, 0.3) * h
            out = splay * (1 - y / h)  # the splayed legs' offset at that height
            parts += [box((t * 0.6, t * 0.6, 2 * (hz + out)), (sx * (hx + out), y, 0)) for sx in (-1, 1)]
        return parts
    if p["base"] == "three legs":
        radius = 0.8 * min(w, d) / 2
        parts = []
        for angle in np.pi / 2 + 2 * np.pi * np.arange(3) / 3:
            direction = np.array([np.cos(angle), 0, np.sin(angle)])
            top = direction * radius + (0, h - p["seat_thickness"] / 2, 0)
            parts.append(_leg(m, t, top, direction * (radius + splay) * 1.3))
        return parts
    if p["base"] == "pedestal":
        column = disc(rng.uniform(0.025, 0.045), h - p["seat_thickness"], 0.02)
        if rng.random() < 0.5:  # an office chair's star of five feet
            feet = [rod(0.02, (0, 0.04, 0), (0.3 * np.cos(a), 0.02, 0.3 * np.sin(a)))
                    for a in 2 * np.pi * np.arange(5) / 5]
            return [column, *feet]
        return [column, disc(rng.uniform(0.18, 0.26), 0.03)]
    # sled: a runner on the floor on each side, posts up to the seat
    parts = []
    for sx in (-1, 1):
        x = sx * (w / 2 - t)
        parts.append(rod(t / 2, (x, t / 2, -d / 2 - 0.03), (x, t / 2, d / 2 + 0.03)))
        parts += [rod(t / 2, (x, t / 2, sz * (d / 2 - t)), (x, h, sz * (d / 2 - t))) for sz in (-1, 1)]
    return parts


def _chair_back(rng, p) -> list:
    """Two uprights from the seat, a top rail, and slats, rails or a solid panel between them."""
    h, w, d, t = p["seat_height"], p["seat_width"], p["seat_depth"], p["leg"]
    top = h + p["back_height"]
    z = -d / 2 + t / 2
    half = (w / 2 - t) if p["seat_shape"] == "square" else 0.8 * w / 2
    parts = [rod(t / 2, (sx * half, h, z), (sx * half, top, z)) if p["material"] == "metal"
             else box((t, top - h, t), (sx * half, (h + top) / 2, z)) for sx in (-1, 1)]
    rail = rng.uniform(0.05, 0.1)
    if p["back"] == "solid":
        return parts + [box((2 * half + t, p["back_height"] * rng.uniform(0.6, 0.95), 0.03),
                            (0, top - p["back_height"] * 0.35, z))]
    parts.append(box((2 * half + t, rail, 0.03), (0, top - rail / 2, z)))
    if p["back"] == "slatted":
        for x in np.linspace(-half, half, p["slats"] + 2)[1:-1]:
            parts.append(box((0.03, p["back_height"], 0.02), (x, h + p["back_height"] / 2, z)))
    else:  # a ladder back: horizontal rails
        for y in np.linspace(h, top - rail, p["slats"] + 1)[1:]:
            parts.append(box((2 * half, 0.04, 0.02), (0, y - 0.02, z)))
    return parts


def _chair_arms(rng, p) -> list:
    h, w, d, t = p["seat_height"], p["seat_width"], p["seat_depth"], p["leg"]
    y = h + rng.uniform(0.18, 0.25)
    parts = []
    for sx in (-1, 1):
        x = sx * (w / 2 - t / 2)
        parts.append(box((0.05, 0.03, d), (x, y, 0)))
        parts.append(box((t, y - h, t), (x, (y + h) / 2, d / 2 - t)))
    return parts


def chair(rng: np.random.Generator):
    back = pick(rng, ("none", "slatted", "ladder", "solid"), (0.3, 0.3, 0.15, 0.25))
    stool = back == "none"
    base = pick(rng, ("four legs", "three legs", "pedestal", "sled"),
                (0.45, 0.3, 0.25, 0.0) if stool else (0.6, 0.0, 0.2, 0.2))
    material = pick(rng, ("wooden", "metal"))
    p = {
        "back": back, "base": base, "material": "metal" if material == "metal" or base == "sled" else "wooden",
        "seat_shape": "round" if base == "three legs" or (stool and rng.random() < 0.6) else "square",
        "seat_height": rng.uniform(0.45, 0.8) if stool else rng.uniform(0.42, 0.5),
        "seat_width": rng.uniform(0.32, 0.42) if stool else rng.uniform(0.4, 0.56),
        "seat_thickness": rng.uniform(0.03, 0.07),
        "back_height": rng.uniform(0.3, 0.55), "slats": int(rng.integers(2, 6)),
        "arms": not stool and base != "three legs" and rng.random() < 0.3,
        "stretchers": rng.random() < 0.4,
    }
    p["seat_depth"] = p["seat_width"] if p["seat_shape"] == "round" else p["seat_width"] * rng.uniform(0.85, 1.1)
    p["leg"] = rng.uniform(0.022, 0.03) if p["material"] == "metal" else rng.uniform(0.035, 0.05)
    h, w, d, st = p["seat_height"], p["seat_width"], p["seat_depth"], p["seat_thickness"]
    seat = disc(w / 2, st, h - st) if p["seat_shape"] == "round" else box((w, st, d), (0, h - st / 2, 0))
    parts = [seat, *_chair_legs(rng, p)]
    if not stool:
        parts += _chair_back(rng, p)
    if p["arms"]:
        parts += _chair_arms(rng, p)
    return parts, _chair_caption(p), p


def _chair_caption(p) -> str:
    noun = "chair" if p["back"] != "none" else "bar stool" if p["seat_height"] > 0.64 else "stool"
    if p["arms"]:
        noun = "armchair"
    legs = {"four legs": "four-legged", "three legs": "three-legged"}.get(p["base"], "")
    words = [p["material"] if p["base"] != "pedestal" else "", legs, noun]
    extras = [f"a {p['back']} back" if p["back"] != "none" else "",
              "a round seat" if p["seat_shape"] == "round" else ""]
    text = article(" ".join(w for w in words if w))
    if p["base"] in ("pedestal", "sled"):
        text += f" on a {p['base']} base"
    return text + (f" with {join(extras)}" if any(extras) else "")


# ---------------------------------------------------------------------------- tables and desks

_TABLE_SIZES = {  # height, length, width ranges in metres
    "dining table": ((0.72, 0.78), (1.2, 2.4), (0.75, 1.05)),
    "coffee table": ((0.35, 0.48), (0.8, 1.4), (0.45, 0.8)),
    "desk": ((0.72, 0.77), (1.1, 1.8), (0.55, 0.8)),
    "side table": ((0.45, 0.7), (0.4, 0.6), (0.4, 0.6)),
}
_TABLE_SUPPORTS = {
    "dining table": ("four legs", "pedestal", "trestle"),
    "coffee table": ("four legs", "pedestal", "trestle"),
    "desk": ("four legs", "trestle", "drawers"),
    "side table": ("four legs", "pedestal"),
}


def _table_top(rng, p):
    h, length, width, t = p["height"], p["length"], p["width"], p["top_thickness"]
    if p["top"] == "rectangular":
        return box((length, t, width), (0, h - t / 2, 0))
    top = disc(0.5, t, h - t)
    top.apply_scale((length, 1, width))  # a unit-diameter disc stretched to an oval (or kept round)
    return top


def _table_legs(rng, p) -> list:
    h, t = p["height"] - p["top_thickness"], p["leg"]
    inset = rng.uniform(0.03, 0.1)
    ellipse = p["top"] != "rectangular"
    hx, hz = p["length"] / 2 - inset - t, p["width"] / 2 - inset - t
    if ellipse:
        hx, hz = hx / np.sqrt(2), hz / np.sqrt(2)
    parts = [_leg(p["material"], t, (sx * hx, h, sz * hz), (sx * hx, 0, sz * hz)) for sx in (-1, 1) for sz in (-1, 1)]
    if p["apron"] and not ellipse:
        apron = rng.uniform(0.06, 0.12)
        parts += [box((2 * hx, apron, 0.02), (0, h - apron / 2, sz * hz)) for sz in (-1, 1)]
        parts += [box((0.02, apron, 2 * hz), (sx * hx, h - apron / 2, 0)) for sx in (-1, 1)]
    return parts


def _table_pedestal(rng, p) -> list:
    h = p["height"] - p["top_thickness"]
    radius = rng.uniform(0.04, 0.09)
    spread = min(p["length"], p["width"]) * rng.uniform(0.3, 0.45)
    xs = (-p["length"] / 4, p["length"] / 4) if p["length"] > 1.5 * p["width"] else (0.0,)
    if len(xs) == 2:  # two feet side by side stay under the top
        spread = min(spread, p["length"] / 4 - 0.03)
    parts, round_foot = [], rng.random() < 0.5
    for x in xs:
        parts.append(disc(radius, h, 0, x))
        if round_foot:
            parts.append(disc(spread, 0.04, 0, x))
        else:  # a cross of two feet
            parts += [box((2 * spread, 0.05, 0.07), (x, 0.025, 0)), box((0.07, 0.05, 2 * spread), (x, 0.025, 0))]
    return parts


def _table_trestle(rng, p) -> list:
    h = p["height"] - p["top_thickness"]
    x = p["length"] / 2 - rng.uniform(0.1, 0.25) * p["length"] / 2
    depth = p["width"] * rng.uniform(0.7, 0.9)
    parts = []
    for sx in (-1, 1):
        parts.append(box((0.06, h, depth * 0.3), (sx * x, h / 2, 0)))  # the upright
        parts.append(box((0.08, 0.06, depth), (sx * x, 0.03, 0)))  # the foot
        parts.append(box((0.08, 0.05, depth), (sx * x, h - 0.025, 0)))  # the cleat under the top
    parts.append(box((2 * x, 0.06, 0.05), (0, h * rng.uniform(0.25, 0.5), 0)))  # the stretcher
    return parts


def _table_drawers(rng, p) -> list:
    h = p["height"] - p["top_thickness"]
    block_width = rng.uniform(0.35, 0.5)
    x = p["length"] / 2 - block_width / 2 - 0.02
    depth = p["width"] - 0.06
    parts = [on_floor((block_width, h, depth), x)]
    gap = 0.012
    height = (h - 0.05) / p["drawers"]
    for k in range(p["drawers"]):
        y = 0.05 + k * height
        parts.append(on_floor((block_width - 2 * gap, height - gap, 0.02), x, y, depth / 2 + 0.01))
        parts.append(on_floor((0.1, 0.02, 0.03), x, y + height / 2, depth / 2 + 0.03))  # the handle
    if rng.random() < 0.5:  # a second block or a side panel at the other end
        parts.append(on_floor((0.03, h, depth), -p["length"] / 2 + 0.04))
    else:
        parts += [_leg(p["material"], p["leg"], (-p["length"] / 2 + 0.05, h, sz * (depth / 2 - 0.03)),
                       (-p["length"] / 2 + 0.05, 0, sz * (depth / 2 - 0.03))) for sz in (-1, 1)]
    return parts


def table(rng: np.random.Generator):
    kind = pick(rng, tuple(_TABLE_SIZES), (0.35, 0.25, 0.25, 0.15))
    heights, lengths, widths = _TABLE_SIZES[kind]
    p = {"kind": kind, "support": pick(rng, _TABLE_SUPPORTS[kind]), "material": pick(rng, ("wooden", "metal")),
         "height": rng.uniform(*heights), "length": rng.uniform(*lengths), "width": rng.uniform(*widths),
         "top_thickness": rng.uniform(0.025, 0.06), "apron": rng.random() < 0.5,
         "drawers": int(rng.integers(2, 5))}
    p["top"] = "rectangular" if kind == "desk" else pick(rng, ("rectangular", "round", "oval"), (0.5, 0.3, 0.2))
    if kind == "side table" and p["top"] == "oval":
        p["top"] = "round"
    if p["top"] == "round" or kind == "side table":
        p["width"] = p["length"] = min(p["length"], p["width"] * 1.4) if p["top"] == "round" else p["length"]
    if p["top"] == "oval" and p["length"] < 1.3 * p["width"]:
        p["length"] = 1.3 * p["width"]
    p["leg"] = rng.uniform(0.025, 0.04) if p["material"] == "metal" else rng.uniform(0.04, 0.08)
    build = {"four legs": _table_legs, "pedestal": _table_pedestal, "trestle": _table_trestle,
             "drawers": _table_drawers}[p["support"]]
    parts = [_table_top(rng, p), *build(rng, p)]
    support = {"four legs": f"with four {p['material']} legs", "pedestal": "on a pedestal base",
               "trestle": "on trestle legs", "drawers": f"with a block of {NUMBER_WORDS[p['drawers']]} drawers"}
    top = "" if p["top"] == "rectangular" and kind == "desk" else p["top"] + " "
    return parts, f"{article(top + kind)} {support[p['support']]}", p
