"""Lamps, lathe-turned vessels (vases, bottles, cups, mugs, bowls) and simple vehicles: part-based,
in metres, Y up; vehicles drive towards +x."""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.interpolate import PchipInterpolator

from vat.geometry.families.furniture import NUMBER_WORDS
from vat.geometry.families.parts import (
    article, difference, disc, frustum, hull, join, lathe, on_floor, pick, rod, rounded_box, union, wheel,
)

# ---------------------------------------------------------------------------- lamps


def _shade(rng, kind: str, radius: float, height: float) -> trimesh.Trimesh:
    """A lamp shade standing on y = 0: a cone (narrow top), a drum or a dome."""
    if kind == "cone":
        return frustum(radius, radius * rng.uniform(0.45, 0.7), height)
    if kind == "drum":
        return frustum(radius, radius, height)
    angles = np.linspace(0, np.pi / 2, 12)
    profile = [(0, 0), *zip(radius * np.cos(angles), height * np.sin(angles))]
    return lathe(profile)


def _point(mesh: trimesh.Trimesh, direction, tip) -> trimesh.Trimesh:
    """Turn a solid built along +y so its +y axis is `direction`, then move its origin to `tip`."""
    mesh.apply_transform(trimesh.geometry.align_vectors((0, 1, 0), np.asarray(direction, float)))
    mesh.apply_translation(tip)
    return mesh


def lamp(rng: np.random.Generator):
    kind = pick(rng, ("floor lamp", "table lamp", "desk lamp"), (0.35, 0.4, 0.25))
    p = {"kind": kind, "shade": pick(rng, ("cone", "drum", "dome")),
         "base": pick(rng, ("round", "square")), "stem": rng.uniform(0.008, 0.018)}
    if kind == "desk lamp":
        return _desk_lamp(rng, p)
    floor = kind == "floor lamp"
    p["height"] = rng.uniform(1.3, 1.9) if floor else rng.uniform(0.35, 0.7)
    p["shade_radius"] = rng.uniform(0.15, 0.25) if floor else min(rng.uniform(0.1, 0.2), 0.4 * p["height"])
    p["shade_height"] = p["shade_radius"] * rng.uniform(0.8, 1.4) if p["shade"] != "dome" else p["shade_radius"] * 0.7
    p["body"] = not floor and rng.random() < 0.5  # a table lamp on a turned, vase-like body
    base_radius = (rng.uniform(0.12, 0.2) if floor else rng.uniform(0.06, 0.1))
    base_height = rng.uniform(0.02, 0.05)
    parts = [disc(base_radius, base_height) if p["base"] == "round"
             else on_floor((2 * base_radius, base_height, 2 * base_radius))]
    shade_bottom = p["height"] - p["shade_height"]
    if p["body"]:
        top = shade_bottom * rng.uniform(0.5, 0.8)
        belly = base_radius * rng.uniform(0.7, 1.1)
        profile = [(0, 0), (belly * 0.6, 0), (belly, top * 0.4), (belly * 0.35, top), (0, top)]
        parts.append(lathe(profile))
    # A floor lamp's stem at least 2.8 cm thick: 1.5% of its height, a few cells of a 256^3 grid.
    parts.append(disc(max(p["stem"] * 1.5, 0.014) if floor else p["stem"], shade_bottom + 0.05, 0.01))
    shade = _shade(rng, p["shade"], p["shade_radius"], p["shade_height"])
    shade.apply_translation((0, shade_bottom, 0))
    parts.append(shade)
    words = [f"a {'cone-shaped' if p['shade'] == 'cone' else p['shade']} shade", f"a {p['base']} base"]
    if p["body"]:
        words.insert(0, "a turned body")
    height = "tall " if floor and p["height"] > 1.7 else ""
    return parts, f"{article(height + kind)} with {join(words)}", p


def _desk_lamp(rng, p):
    """A base, two arm segments bent at an elbow, and a shade at the end pointing down and forward."""
    base_radius, base_height = rng.uniform(0.07, 0.11), rng.uniform(0.02, 0.04)
    lower, upper = rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)
    tilt = rng.uniform(0.0, 0.5)
    elbow = np.array([np.sin(tilt) * lower * -0.5, base_height + np.cos(tilt) * lower, 0.0])
    reach = rng.uniform(0.5, 0.95)
    tip = elbow + upper * np.array([np.sin(reach), -np.cos(reach) * 0.3, 0.0])
    p.update(height=float(elbow[1]), shade_radius=rng.uniform(0.05, 0.09))
    p["shade_height"] = p["shade_radius"] * rng.uniform(1.0, 1.5)
    radius = max(p["stem"], 0.012)
    parts = [disc(base_radius, base_height) if p["base"] == "round"
             else on_floor((2 * base_radius, base_height, 1.6 * base_radius)),
             rod(radius, (0, base_height * 0.5, 0), elbow), rod(radius, elbow, tip),
             trimesh.creation.icosphere(2, radius * 2).apply_translation(elbow)]
    # The shade opens downwards and a little forwards, its narrow end (or the dome's top) at the arm's tip.
    direction = np.array([0.35, -1.0, 0.0]) / np.linalg.norm((0.35, -1.0))
    shade = _shade(rng, p["shade"], p["shade_radius"], p["shade_height"])
    parts.append(_point(shade, -direction, tip + direction * p["shade_height"]))
    caption = f"a desk lamp with an articulated arm, a {p['shade'] if p['shade'] != 'cone' else 'conical'} shade"
    return parts, f"{caption} and a {p['base']} base", p


# ---------------------------------------------------------------------------- vessels (lathe objects)

_VESSEL_SIZES = {  # height, widest radius in metres
    "vase": ((0.15, 0.6), (0.05, 0.16)),
    "bottle": ((0.15, 0.35), (0.03, 0.05)),
    "cup": ((0.07, 0.12), (0.03, 0.05)),
    "mug": ((0.08, 0.12), (0.035, 0.05)),
    "bowl": ((0.05, 0.14), (0.07, 0.18)),
}


def _vessel_outline(rng, kind: str, height: float, radius: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Heights [N] from 0 to `height` and the outer radius at each (a smooth monotone spline)."""
    if kind == "vase":
        neck = rng.uniform(0.25, 0.8)
        knots = [(0, rng.uniform(0.4, 0.8)), (rng.uniform(0.25, 0.6), 1.0), (rng.uniform(0.75, 0.9), neck),
                 (1, neck * rng.uniform(1.0, 1.4))]
        shape = {"neck": neck}
    elif kind == "bottle":
        shoulder, neck = rng.uniform(0.45, 0.75), rng.uniform(0.25, 0.4)
        knots = [(0, 0.95), (shoulder, 1.0), (shoulder + 0.12, neck * 1.2), (min(shoulder + 0.2, 0.9), neck),
                 (1, neck)]
        shape = {"shoulder": shoulder, "neck": neck}
    elif kind == "bowl":
        foot = rng.uniform(0.35, 0.6)
        knots = [(0, foot), (0.08, foot), (0.5, rng.uniform(0.8, 0.92)), (1, 1.0)]
        shape = {"foot": foot}
    else:  # cups and mugs: straight or tapered sides
        taper = rng.uniform(0.7, 1.0)
        knots = [(0, taper), (1, 1.0)]
        shape = {"taper": taper}
    t, r = np.array(knots).T
    heights = np.linspace(0, 1, 24)
    radii = PchipInterpolator(t, r)(heights) if len(t) > 2 else np.interp(heights, t, r)
    return heights * height, radii * radius / radii.max(), shape


def vessel(rng: np.random.Generator):
    kind = pick(rng, tuple(_VESSEL_SIZES), (0.3, 0.2, 0.15, 0.15, 0.2))
    heights, radii = _VESSEL_SIZES[kind]
    p = {"kind": kind, "height": rng.uniform(*heights), "radius": rng.uniform(*radii)}
    ys, rs, shape = _vessel_outline(rng, kind, p["height"], p["radius"])
    p.update(shape)
    wall = rng.uniform(0.05, 0.08) * rs.min() + 0.003
    outer = lathe([(0, 0), *zip(rs, ys), (0, ys[-1])])
    parts = [outer]
    if kind == "bottle":  # closed, with a cap
        cap = rs[-1] * 1.1
        parts.append(disc(cap, rng.uniform(0.015, 0.03), ys[-1] - 0.005))
        mesh = union(parts)
    else:
        if kind == "mug":
            handle = trimesh.creation.torus(p["height"] * rng.uniform(0.25, 0.35), rng.uniform(0.006, 0.01))
            handle.apply_translation((rs[len(rs) // 2], p["height"] / 2, 0))
            parts.append(handle)
        bottom = max(wall, 0.006)
        inner = lathe([(0, bottom), *zip(np.maximum(rs - wall, wall)[1:], ys[1:]), (0, ys[-1] + 0.01)])
        mesh = difference(union(parts), inner)
    slender = p["height"] / (2 * p["radius"])
    look = "tall narrow " if slender > 2.2 else "short wide " if slender < 0.9 and kind != "bowl" else ""
    if kind == "bowl":
        look = "deep " if slender > 0.45 else "shallow "
    extras = {"vase": "a narrow neck" if p.get("neck", 1) < 0.45 else "a wide mouth",
              "bottle": "a long neck" if p.get("shoulder", 1) < 0.6 else "a short neck",
              "mug": "a handle", "cup": "", "bowl": "a foot ring" if p.get("foot", 0) < 0.45 else ""}[kind]
    return mesh, article(look + kind) + (f" with {extras}" if extras else ""), p


# ---------------------------------------------------------------------------- vehicles

_VEHICLE_SIZES = {  # length, width, height ranges in metres; wheel radius
    "sedan": ((4.2, 5.0), (1.7, 1.9), (1.35, 1.5), 0.32),
    "hatchback": ((3.6, 4.3), (1.65, 1.8), (1.4, 1.55), 0.3),
    "SUV": ((4.3, 5.0), (1.8, 2.0), (1.65, 1.85), 0.38),
    "van": ((4.6, 6.0), (1.9, 2.1), (1.9, 2.6), 0.35),
    "pickup truck": ((5.0, 5.9), (1.85, 2.05), (1.75, 1.95), 0.4),
    "box truck": ((6.5, 9.0), (2.3, 2.5), (3.0, 3.7), 0.5),
    "bus": ((9.0, 13.0), (2.45, 2.55), (2.9, 3.3), 0.5),
}


def _car_cabin(rng, kind, length, width, belt, height, clear) -> trimesh.Trimesh:
    """The glasshouse: a trapezoid prism from the beltline to the roof, narrower than the body."""
    w = width * rng.uniform(0.8, 0.9) / 2
    front = length / 2 - length * (rng.uniform(0.3, 0.38) if kind == "sedan" else rng.uniform(0.22, 0.3))
    rear = -length / 2 + (length * rng.uniform(0.2, 0.26) if kind == "sedan" else 0.05)
    roof_front, roof_rear = front - (height - belt) * rng.uniform(1.2, 1.8), rear + (height - belt) * (
        rng.uniform(0.8, 1.3) if kind == "sedan" else rng.uniform(0.1, 0.4))
    points = [(x, y, sz * w) for sz in (-1, 1) for x, y in
              ((front, belt), (rear, belt), (roof_front, height), (roof_rear, height))]
    return hull(points)


def vehicle(rng: np.random.Generator):
    kind = pick(rng, tuple(_VEHICLE_SIZES), (0.2, 0.15, 0.15, 0.15, 0.12, 0.1, 0.13))
    lengths, widths, heights, wheel_radius = _VEHICLE_SIZES[kind]
    p = {"kind": kind, "length": rng.uniform(*lengths), "width": rng.uniform(*widths),
         "height": rng.uniform(*heights), "wheel_radius": wheel_radius * rng.uniform(0.9, 1.1)}
    length, width, height, r = p["length"], p["width"], p["height"], p["wheel_radius"]
    clear = r * rng.uniform(0.45, 0.7)
    belt = r * 2 + rng.uniform(0.15, 0.35) if kind in ("sedan", "hatchback", "SUV") else height
    parts = []
    if kind in ("sedan", "hatchback", "SUV"):
        parts += [rounded_box((length, belt - clear, width), (0, (belt + clear) / 2, 0), 0.12),
                  _car_cabin(rng, kind, length, width, belt - 0.02, height, clear)]
    elif kind == "van":
        nose = rng.uniform(0.5, 0.9)
        parts += [rounded_box((length - nose, height - clear, width), (-nose / 2, (height + clear) / 2, 0), 0.15),
                  rounded_box((nose + 0.2, 0.45 * (height - clear), width), (length / 2 - nose / 2 - 0.1,
                              clear + 0.225 * (height - clear), 0), 0.12)]
    else:
        parts += _cab_and_load(rng, kind, p, clear)
    axles = [length / 2 - r * rng.uniform(1.5, 2.5), -length / 2 + r * rng.uniform(1.5, 2.6)]
    if kind == "box truck" and rng.random() < 0.5 or kind == "bus" and length > 12.0:
        axles.append(axles[-1] + 2.4 * r)
    p["wheels"] = 2 * len(axles)
    for x in axles:
        parts += [wheel(r, rng.uniform(0.18, 0.3), (x, r, sz * (width / 2 - 0.1))) for sz in (-1, 1)]
    words = {"sedan": "a sedan car", "hatchback": "a small hatchback car", "SUV": "an SUV",
             "van": "a delivery van", "pickup truck": "a pickup truck with an open bed",
             "box truck": f"a box truck with {NUMBER_WORDS[p['wheels']]} wheels",
             "bus": "a long city bus" if length > 11 else "a bus"}
    return parts, words[kind], p


def _cab_and_load(rng, kind, p, clear) -> list:
    """Trucks and buses: a cab at the front (+x) and a load bed or box behind it; a bus is one box."""
    length, width, height = p["length"], p["width"], p["height"]
    if kind == "bus":
        return [rounded_box((length, height - clear, width), (0, (height + clear) / 2, 0), 0.2)]
    cab = rng.uniform(1.8, 2.4)
    cab_height = height if kind == "pickup truck" else height * rng.uniform(0.7, 0.85)
    front = length / 2 - cab
    parts = [rounded_box((cab, cab_height - clear, width), (front + cab / 2, (cab_height + clear) / 2, 0), 0.15)]
    if kind == "pickup truck":
        hood = rng.uniform(0.9, 1.3)
        parts[0] = union([rounded_box((cab - hood, height - clear, width), (front + (cab - hood) / 2,
                                      (height + clear) / 2, 0), 0.12),
                          rounded_box((hood + 0.1, 0.55 * (height - clear), width),
                                      (length / 2 - hood / 2 - 0.05, clear + 0.275 * (height - clear), 0), 0.1)])
        bed_length, bed_top = front + length / 2 + 0.05, clear + 0.55 * (height - clear)
        bed = on_floor((bed_length, bed_top - clear, width), -length / 2 + bed_length / 2, clear)
        well = on_floor((bed_length - 0.1, bed_top, width - 0.1), -length / 2 + bed_length / 2, clear + 0.15)
        return parts + [difference(bed, well)]
    load = length - cab - 0.1
    chassis = on_floor((length - 0.4, 0.3, width * 0.7), 0, clear * 0.7)
    return parts + [chassis, on_floor((load, height - clear, width), -length / 2 + load / 2, clear)]
