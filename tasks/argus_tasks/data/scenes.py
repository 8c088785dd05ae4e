"""Procedural driving scenes: the stand-in for fleet data, and the test fixture.

``render_scene(seed, size)`` draws a forward-facing camera frame of a street: a road in
perspective with lane markings, sidewalks, grass verges, building facades and tree lines on both
sides, a distant skyline, vehicles, street lamps and sign posts, and a sky. It returns the RGB
frame, a per-pixel label map (ids of :data:`argus_tasks.data.schema.CLASSES`) and a depth map in
metres. The same seed gives the same street at every size from 64 to 512 px (the layout is drawn
from the seed alone; only pixel textures depend on the size).

``apply_condition(scene, condition, rng)`` turns the clear frame into ``fog``, ``rain``, ``snow``
or ``night`` with physically motivated image formation (see :mod:`argus_tasks.data.weather`).

Geometry: a pinhole camera at height ``h`` above a flat ground plane. A pixel row ``y`` below the
horizon ``y_h`` sees the ground at planar depth ``Z = h * f / (y - y_h)``; facades are vertical
planes parallel to the road; vehicles and poles are upright rectangles with a z-test. Thin
classes (lane markings, poles) are never drawn thinner than :func:`min_thin_px` pixels, so a
segmenter can learn them even at 64 px.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from argus_tasks.data.schema import CLASSES, IGNORE_ID

ROAD = CLASSES.index("road")
SIDEWALK = CLASSES.index("sidewalk")
BUILDING = CLASSES.index("building")
VEGETATION = CLASSES.index("vegetation")
SKY = CLASSES.index("sky")
VEHICLE = CLASSES.index("vehicle")
LANE = CLASSES.index("lane_marking")
POLE = CLASSES.index("pole")

MIN_SIZE, MAX_SIZE = 64, 512
SKY_DEPTH = 600.0  # metres given to sky pixels (fits the uint16-centimetre depth PNG)
MARKING_MAX_DEPTH = 45.0  # lane markings further away than this merge into the road

# What a pixel's surface faces: weather effects (snow cover, wet reflections) depend on it.
SURFACE_SKY, SURFACE_GROUND, SURFACE_UPRIGHT = 0, 1, 2


def min_thin_px(size: int) -> float:
    """Smallest width, in pixels, of a lane marking or pole (2.5 px at 64 px, 7 px at 512 px)."""
    return 2.5 * max(1.0, size / 64.0) ** 0.5


@dataclass(frozen=True)
class Camera:
    focal: float  # pixels
    cx: float  # principal point column
    horizon: float  # row of the horizon
    height: float  # metres above the ground

    def rays(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-column ``u = (x - cx) / f`` and per-row ``v = (y - y_h) / f`` at pixel centres."""
        centres = np.arange(size, dtype=np.float64) + 0.5
        return (centres - self.cx) / self.focal, (centres - self.horizon) / self.focal


@dataclass
class Scene:
    """One rendered street. ``rgb``/``label``/``depth`` are the public data; the rest feeds weather."""

    rgb: np.ndarray  # uint8 HxWx3, display (sRGB-like) values
    label: np.ndarray  # uint8 HxW, CLASSES ids, IGNORE_ID where undefined
    depth: np.ndarray  # float32 HxW, metres along the ray; SKY_DEPTH for sky
    seed: int = 0
    size: int = 0
    camera: Camera | None = None
    surface: np.ndarray | None = None  # uint8 HxW: SURFACE_* codes
    emissive: np.ndarray | None = None  # float32 HxWx3, light emitted at night (lamps, windows, car lights)
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # street lamp heads, world XYZ
    road: dict = field(default_factory=dict)  # offset, slope, half_width, lane_width, n_lanes

    def planar_depth(self) -> np.ndarray:
        """Depth along the optical axis (``Z``), from the ray depth."""
        u, v = self.camera.rays(self.size)
        return self.depth / np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2)

    def world_xyz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates of every pixel: X right, Y up from the ground, Z forward."""
        u, v = self.camera.rays(self.size)
        z = self.planar_depth()
        return u[None, :] * z, self.camera.height - v[:, None] * z, z


# ---------------------------------------------------------------------------------------------
# Layout: everything drawn from the seed alone, in world units, independent of the image size.
# ---------------------------------------------------------------------------------------------

@dataclass
class _Segment:
    z0: float
    z1: float
    kind: str  # building | trees | open
    height: float
    colour: np.ndarray
    window_spacing: float
    floor_height: float
    window_colour: np.ndarray
    lit_fraction: float
    ripple: tuple  # (amplitudes, frequencies, phases) of a tree line's top


@dataclass
class _Layout:
    seed: int
    horizon_frac: float
    focal_frac: float
    pan_frac: float
    cam_height: float
    slope: float
    n_lanes: int
    lane_width: float
    offset: float
    sidewalk: tuple[float, float]
    setback: tuple[float, float]
    sides: tuple[list, list]
    backdrop_z: float
    backdrop_edges: np.ndarray
    backdrop_heights: np.ndarray
    backdrop_kinds: np.ndarray
    vehicles: list
    poles: list
    colours: dict
    light: dict
    lamp_colour: np.ndarray


def _colour(rng, base, jitter) -> np.ndarray:
    return np.clip(np.asarray(base, float) + rng.uniform(-jitter, jitter, 3), 0.0, 1.0)


def _grey(rng, lo, hi, tint=0.03) -> np.ndarray:
    g = rng.uniform(lo, hi)
    return np.clip(g + rng.uniform(-tint, tint, 3), 0.0, 1.0)


def _side_segments(rng) -> list[_Segment]:
    segments, z = [], rng.uniform(-6.0, 4.0)
    while z < 260.0:
        length = rng.uniform(8.0, 35.0)
        kind = rng.choice(["building", "trees", "open"], p=[0.62, 0.3, 0.08])
        if kind == "building":
            height = rng.uniform(6.0, 30.0)
            material = int(rng.integers(0, 4))
            if material == 0:
                colour = _colour(rng, (0.62, 0.55, 0.48), 0.1)  # sandstone
            elif material == 1:
                colour = _colour(rng, (0.55, 0.32, 0.26), 0.08)  # brick
            elif material == 2:
                colour = _grey(rng, 0.45, 0.8)  # concrete / render
            else:
                colour = _colour(rng, (0.72, 0.68, 0.58), 0.08)  # cream
        else:
            height = rng.uniform(4.0, 11.0) if kind == "trees" else 0.0
            colour = _colour(rng, (0.2, 0.36, 0.14), 0.07)
        ripple = (rng.uniform(0.3, 1.4, 3), rng.uniform(0.2, 1.1, 3), rng.uniform(0, 2 * np.pi, 3))
        segments.append(_Segment(
            z0=z, z1=z + length, kind=str(kind), height=float(height), colour=np.asarray(colour),
            window_spacing=rng.uniform(2.2, 4.0), floor_height=rng.uniform(2.8, 3.6),
            window_colour=_colour(rng, (0.2, 0.24, 0.3), 0.06), lit_fraction=rng.uniform(0.1, 0.6),
            ripple=ripple,
        ))
        z += length + (rng.uniform(0.5, 6.0) if rng.random() < 0.35 else 0.0)
    return segments


def _vehicle_paint(rng) -> np.ndarray:
    paint = int(rng.integers(0, 6))
    if paint < 3:
        return _grey(rng, *((0.05, 0.15), (0.75, 0.92), (0.4, 0.6))[paint])
    return _colour(rng, ((0.6, 0.1, 0.08), (0.1, 0.2, 0.5), (0.75, 0.7, 0.2))[paint - 3], 0.1)


def _vehicles(rng, n_lanes: int, lane_width: float, ego_lane: int) -> list[dict]:
    out = []
    for _ in range(rng.integers(1, 6)):
        lane = int(rng.integers(0, n_lanes))
        z = rng.uniform(6.0, 45.0) if lane != ego_lane else rng.uniform(8.0, 45.0)
        kind = rng.choice(["car", "van", "truck"], p=[0.72, 0.18, 0.1])
        width, height = {"car": (1.8, 1.5), "van": (2.0, 2.2), "truck": (2.5, 3.4)}[str(kind)]
        oncoming = lane < n_lanes // 2 and rng.random() < 0.8
        out.append({
            "lane": lane, "z": float(z), "dx": float(rng.uniform(-0.35, 0.35)),
            "width": width * rng.uniform(0.92, 1.08), "height": height * rng.uniform(0.92, 1.1),
            "kind": str(kind), "oncoming": bool(oncoming),
            "colour": _vehicle_paint(rng),
        })
    # keep vehicles apart within a lane
    out.sort(key=lambda v: v["z"])
    kept = []
    for v in out:
        if all(k["lane"] != v["lane"] or abs(k["z"] - v["z"]) > 9.0 for k in kept):
            kept.append(v)
    return kept


def _poles(rng) -> list[dict]:
    poles = []
    for side in (-1, 1):
        if rng.random() < 0.15:
            continue
        spacing = rng.uniform(18.0, 32.0)
        z = rng.uniform(6.0, 6.0 + spacing)
        while z < 75.0:
            poles.append({"side": side, "z": float(z), "kind": "lamp", "height": rng.uniform(6.5, 9.0)})
            z += spacing * rng.uniform(0.9, 1.1)
        for _ in range(rng.integers(0, 2)):
            poles.append({"side": side, "z": float(rng.uniform(8.0, 40.0)), "kind": "sign",
                          "height": rng.uniform(2.4, 3.2)})
    return poles


def sample_layout(seed: int) -> _Layout:
    rng = np.random.default_rng([int(seed), 1009])
    n_lanes = int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2]))
    lane_width = rng.uniform(3.0, 3.8)
    ego_lane = int(rng.integers(n_lanes // 2, n_lanes))  # drive on the right half
    half = n_lanes * lane_width / 2
    offset = -(-half + (ego_lane + 0.5) * lane_width) + rng.uniform(-0.3, 0.3)
    edges = np.cumsum(rng.uniform(15.0, 70.0, 40)) - 800.0
    sky_zenith = _colour(rng, (0.25, 0.45, 0.8), 0.08)
    return _Layout(
        seed=int(seed),
        horizon_frac=rng.uniform(0.38, 0.48), focal_frac=rng.uniform(0.8, 1.0),
        pan_frac=rng.uniform(-0.04, 0.04), cam_height=rng.uniform(1.3, 1.7),
        slope=rng.uniform(-0.07, 0.07), n_lanes=n_lanes, lane_width=lane_width, offset=offset,
        sidewalk=(rng.uniform(1.8, 4.0), rng.uniform(1.8, 4.0)),
        setback=(rng.uniform(0.0, 4.0), rng.uniform(0.0, 4.0)),
        sides=(_side_segments(rng), _side_segments(rng)),
        backdrop_z=rng.uniform(140.0, 230.0), backdrop_edges=edges,
        backdrop_heights=rng.uniform(4.0, 45.0, edges.size + 1),
        backdrop_kinds=(rng.random(edges.size + 1) < 0.3),  # True: tree-covered hill
        vehicles=_vehicles(rng, n_lanes, lane_width, ego_lane),
        poles=_poles(rng),
        colours={
            "road": _grey(rng, 0.24, 0.42, 0.02), "sidewalk": _colour(rng, (0.62, 0.6, 0.56), 0.08),
            "curb": _grey(rng, 0.65, 0.8), "grass": _colour(rng, (0.28, 0.45, 0.17), 0.07),
            "marking": _colour(rng, (0.92, 0.92, 0.88), 0.05),
            "edge_marking": (_colour(rng, (0.93, 0.8, 0.2), 0.05) if rng.random() < 0.2
                             else _colour(rng, (0.92, 0.92, 0.88), 0.05)),
            "sky_zenith": sky_zenith, "sky_horizon": np.clip(sky_zenith * 0.4 + 0.55, 0, 1),
            "pole": _grey(rng, 0.3, 0.55), "sign": _colour(rng, (0.2, 0.35, 0.7), 0.15),
        },
        light={
            "exposure": rng.uniform(0.88, 1.1), "left": rng.uniform(0.65, 1.0), "right": rng.uniform(0.65, 1.0),
            "clouds": rng.uniform(0.0, 0.8), "sun_tint": _colour(rng, (1.0, 0.98, 0.94), 0.03),
            "dash": rng.uniform(2.5, 4.0), "gap": rng.uniform(4.0, 7.0), "dash_phase": rng.uniform(0, 10),
        },
        lamp_colour=(np.array([1.0, 0.62, 0.28]) if rng.random() < 0.5 else np.array([0.95, 0.95, 1.0])),
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _value_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1] of shape (h, w) from a (cells+1)^2 lattice, bilinear with smoothstep."""
    grid = rng.random((cells + 1, cells + 1))

    def axis_weights(n):
        pos = np.linspace(0, cells, n, endpoint=False) + cells / (2 * n)
        i0 = np.minimum(pos.astype(int), cells - 1)
        t = pos - i0
        return i0, t * t * (3 - 2 * t)

    iy, ty = axis_weights(h)
    ix, tx = axis_weights(w)
    top = grid[iy][:, ix] * (1 - tx) + grid[iy][:, ix + 1] * tx
    bottom = grid[iy + 1][:, ix] * (1 - tx) + grid[iy + 1][:, ix + 1] * tx
    return top * (1 - ty[:, None]) + bottom * ty[:, None]


def fractal_noise(rng, h: int, w: int, base_cells: int = 3, octaves: int = 4) -> np.ndarray:
    """Sum of value-noise octaves, rescaled to [0, 1]."""
    out, amp, total = np.zeros((h, w)), 1.0, 0.0
    for o in range(octaves):
        out += amp * _value_noise(rng, h, w, base_cells * 2 ** o)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _hash01(*ints) -> np.ndarray:
    """Deterministic per-cell pseudo-random numbers in [0, 1) from integer arrays."""
    h = np.uint64(1469598103934665603)
    for a in ints:
        a = np.asarray(a).astype(np.int64).astype(np.uint64)
        h = (h ^ a) * np.uint64(1099511628211)
        h ^= h >> np.uint64(29)
    return (h % np.uint64(100003)).astype(np.float64) / 100003.0


class _Canvas:
    """Colour, label, planar-depth and surface buffers with a z-test."""

    def __init__(self, size: int):
        self.colour = np.zeros((size, size, 3))
        self.label = np.full((size, size), IGNORE_ID, np.uint8)
        self.z = np.full((size, size), np.inf)
        self.surface = np.zeros((size, size), np.uint8)
        self.emissive = np.zeros((size, size, 3), np.float32)

    def paint(self, mask, z, label, colour, surface=SURFACE_UPRIGHT):
        m = mask & (z < self.z)
        self.z = np.where(m, z, self.z)
        self.label[m] = label
        self.surface[m] = surface
        colour = np.broadcast_to(colour, self.colour.shape) if np.ndim(colour) == 3 else colour
        if np.ndim(colour) == 3:
            self.colour[m] = colour[m]
        else:
            self.colour[m] = colour
        self.emissive[m] = 0.0
        return m


class _Renderer:
    def __init__(self, layout: _Layout, size: int):
        self.L = layout
        self.S = size
        self.cam = Camera(focal=layout.focal_frac * size, cx=size * (0.5 + layout.pan_frac),
                          horizon=layout.horizon_frac * size, height=layout.cam_height)
        self.u, self.v = self.cam.rays(size)
        self.rng = np.random.default_rng([layout.seed, size, 7])  # pixel textures only
        self.c = _Canvas(size)
        self.half = layout.n_lanes * layout.lane_width / 2
        self.thin = min_thin_px(size)
        self.lamps: list[tuple[float, float, float]] = []

    # ---- helpers -----------------------------------------------------------------------------
    def road_centre(self, z):
        return self.L.offset + self.L.slope * z

    def col(self, x_world, z):
        return self.cam.cx + x_world / z * self.cam.focal

    def row(self, y_world, z):
        return self.cam.horizon + (self.cam.height - y_world) / z * self.cam.focal

    def rect(self, x0, x1, y0, y1):
        """Boolean mask of the pixel rectangle [x0, x1) x [y0, y1) (floats, rounded)."""
        S = self.S
        c0, c1 = int(np.clip(np.floor(x0 + 0.5), 0, S)), int(np.clip(np.floor(x1 + 0.5), 0, S))
        r0, r1 = int(np.clip(np.floor(y0 + 0.5), 0, S)), int(np.clip(np.floor(y1 + 0.5), 0, S))
        m = np.zeros((S, S), bool)
        if c1 > c0 and r1 > r0:
            m[r0:r1, c0:c1] = True
        return m

    # ---- layers --------------------------------------------------------------------------------
    def ground(self):
        L, S, cam = self.L, self.S, self.cam
        rows = self.v > 1e-6
        z_row = np.where(rows, cam.height / np.maximum(self.v, 1e-6), np.inf)
        z = np.broadcast_to(z_row[:, None], (S, S))
        zs = np.where(np.isfinite(z), z, 1e9)
        x = self.u[None, :] * zs
        xr = x - self.road_centre(zs)
        ax = np.abs(xr)
        side_sw = np.where(xr < 0, L.sidewalk[0], L.sidewalk[1])
        col = np.empty((S, S, 3))
        label = np.full((S, S), VEGETATION, np.uint8)
        grass_tex = fractal_noise(self.rng, S, S, 6, 3)[..., None]
        col[:] = L.colours["grass"] * (0.75 + 0.5 * grass_tex)
        sidewalk = ax < self.half + side_sw
        label[sidewalk] = SIDEWALK
        slabs = (np.floor(zs / 1.5) + np.floor(xr / 1.5)) % 2
        col[sidewalk] = (L.colours["sidewalk"] * (0.95 + 0.07 * slabs[..., None]))[sidewalk]
        curb = sidewalk & (ax < self.half + 0.25)
        col[curb] = L.colours["curb"]
        road = ax < self.half
        label[road] = ROAD
        patches = fractal_noise(self.rng, S, S, 4, 3)[..., None]
        col[road] = (L.colours["road"] * (0.85 + 0.3 * patches))[road]
        # markings: keep them at least `thin` pixels wide, drop them beyond MARKING_MAX_DEPTH
        half_px_world = 0.5 * self.thin * zs / cam.focal
        near = road & (zs < MARKING_MAX_DEPTH)
        edge_hw = np.maximum(0.1, half_px_world)
        edge = near & (ax > self.half - 0.2 - 2 * edge_hw) & (ax < self.half - 0.2)
        label[edge] = LANE
        col[edge] = L.colours["edge_marking"]
        # dashes between lanes; far away, where the gap would be under 2 px, they read as solid
        lw = L.lane_width
        li = np.round((xr + self.half) / lw)
        d_lane = np.abs(xr + self.half - li * lw)
        inner = (li >= 1) & (li <= L.n_lanes - 1)
        period = L.light["dash"] + L.light["gap"]
        in_dash = ((zs + L.light["dash_phase"]) % period) < L.light["dash"]
        gap_px = L.light["gap"] * cam.height * cam.focal / np.maximum(zs, 1e-3) ** 2
        dash = near & inner & (d_lane < np.maximum(0.075, half_px_world)) & (in_dash | (gap_px < 2.0))
        label[dash] = LANE
        col[dash] = L.colours["marking"]
        ground = np.broadcast_to(rows[:, None], (S, S))
        self.c.paint(ground, z, 0, col, SURFACE_GROUND)
        self.c.label[ground] = label[ground]

    def facades(self):
        L, S, cam = self.L, self.S, self.cam
        for side, segments in ((0, L.sides[0]), (1, L.sides[1])):
            sign = -1 if side == 0 else 1
            a = self.L.offset + sign * (self.half + L.sidewalk[side] + L.setback[side])
            denom = self.u - L.slope
            with np.errstate(divide="ignore", invalid="ignore"):
                zc = a / denom
            valid = np.isfinite(zc) & (zc > 0.5)
            zc = np.where(valid, zc, 1e9)
            starts = np.array([s.z0 for s in segments])
            idx = np.clip(np.searchsorted(starts, zc, side="right") - 1, 0, len(segments) - 1)
            seg_end = np.array([s.z1 for s in segments])[idx]
            inside = valid & (zc >= starts[idx]) & (zc < seg_end)
            kinds = np.array([s.kind for s in segments])[idx]
            heights = np.array([s.height for s in segments])[idx]
            ripple = np.zeros_like(zc)
            for k, s in enumerate(segments):
                if s.kind == "trees":
                    amps, freqs, phases = s.ripple
                    sel = idx == k
                    ripple[sel] = sum(a_ * np.sin(f_ * zc[sel] + p_) for a_, f_, p_ in zip(amps, freqs, phases, strict=True))
            top = heights + ripple
            y = cam.height - self.v[:, None] * zc[None, :]
            hit = inside[None, :] & (y >= 0) & (y < top[None, :])
            zc2 = np.broadcast_to(zc[None, :], (S, S))
            light = L.light["left" if side == 0 else "right"]
            # buildings
            bmask = hit & (kinds == "building")[None, :]
            if bmask.any():
                seg_col = np.array([s.colour for s in segments])[idx]
                colour = np.broadcast_to(seg_col[None, :, :] * light, (S, S, 3)).copy()
                spacing = np.array([s.window_spacing for s in segments])[idx][None, :]
                floor_h = np.array([s.floor_height for s in segments])[idx][None, :]
                along = (zc2 - starts[idx][None, :]) / spacing
                up = y / floor_h
                win = (np.abs((along % 1.0) - 0.5) < 0.27) & (np.abs((up % 1.0) - 0.55) < 0.22) & (y > 2.5)
                win &= (y < top[None, :] - 1.0)
                wcol = np.array([s.window_colour for s in segments])[idx]
                wcol = np.broadcast_to(wcol[None, :, :], (S, S, 3))
                colour[win] = wcol[win]
                tex = 1.0 + 0.06 * (fractal_noise(self.rng, S, S, 8, 2) - 0.5)
                colour *= tex[..., None]
                m = self.c.paint(bmask, zc2, BUILDING, colour)
                lit_p = np.array([s.lit_fraction for s in segments])[idx][None, :]
                cell_a = np.floor(along).astype(np.int64)
                cell_b = np.floor(up).astype(np.int64)
                lit = m & win & (_hash01(cell_a, cell_b, idx[None, :], side, L.seed) < lit_p)
                self.c.emissive[lit] = np.array([1.0, 0.72, 0.4], np.float32) * 0.5
            # tree lines
            tmask = hit & (kinds == "trees")[None, :]
            if tmask.any():
                seg_col = np.array([s.colour for s in segments])[idx]
                leaves = fractal_noise(self.rng, S, S, max(4, S // 8), 2)
                colour = seg_col[None, :, :] * (0.6 + 0.7 * leaves[..., None]) * (0.85 + 0.15 * light)
                self.c.paint(tmask, zc2, VEGETATION, colour)

    def backdrop(self):
        L, S, cam = self.L, self.S, self.cam
        zb = L.backdrop_z
        y = cam.height - self.v[:, None] * zb
        x = self.u * zb
        idx = np.searchsorted(L.backdrop_edges, x)
        h = L.backdrop_heights[idx]
        trees = L.backdrop_kinds[idx]
        mask = (y >= 0) & (y < h[None, :])
        zz = np.full((S, S), zb)
        base_b = np.array([0.55, 0.56, 0.6])
        base_t = np.array([0.25, 0.38, 0.22])
        shade = 0.9 + 0.2 * _hash01(idx, L.seed)[None, :, None]
        colour_b = np.broadcast_to(base_b, (S, S, 3)) * shade
        colour_t = np.broadcast_to(base_t, (S, S, 3)) * shade
        self.c.paint(mask & ~trees[None, :], zz, BUILDING, colour_b)
        self.c.paint(mask & trees[None, :], zz, VEGETATION, colour_t)

    def vehicles(self):
        L, cam = self.L, self.cam
        for veh in sorted(L.vehicles, key=lambda v: -v["z"]):
            z = veh["z"]
            x = self.road_centre(z) - self.half + (veh["lane"] + 0.5) * L.lane_width + veh["dx"]
            x0, x1 = self.col(x - veh["width"] / 2, z), self.col(x + veh["width"] / 2, z)
            y1, y0 = self.row(0.0, z), self.row(veh["height"], z)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            box = self.rect(x0, x1, y0, y1)
            rr, cc = np.mgrid[0:self.S, 0:self.S]
            ry = (rr + 0.5 - y0) / (y1 - y0)
            rx = (cc + 0.5 - x0) / (x1 - x0)
            colour = np.empty((self.S, self.S, 3))
            colour[:] = veh["colour"]
            glass_top = 0.12 if veh["kind"] == "car" else 0.08
            glass_bottom = 0.45 if veh["kind"] == "car" else 0.32
            glass = (ry > glass_top) & (ry < glass_bottom) & (np.abs(rx - 0.5) < 0.38)
            colour[glass] = (0.08, 0.1, 0.13)
            bumper = ry > 0.84
            colour[bumper] = np.asarray(veh["colour"]) * 0.35
            wheels = (ry > 0.9) & (np.abs(rx - 0.5) > 0.28)
            colour[wheels] = (0.03, 0.03, 0.03)
            lamps = (ry > 0.58) & (ry < 0.72) & (np.abs(rx - 0.5) > 0.36)
            lamp_rgb = (0.95, 0.92, 0.8) if veh["oncoming"] else (0.75, 0.05, 0.04)
            colour[lamps] = lamp_rgb
            if veh["kind"] == "truck":
                colour[(ry < glass_top)] = np.asarray(veh["colour"]) * 0.9
            m = self.c.paint(box, np.full((self.S, self.S), z), VEHICLE, colour)
            emit = (np.array([6.0, 5.6, 4.6]) if veh["oncoming"] else np.array([3.0, 0.15, 0.08]))
            self.c.emissive[m & lamps] = emit.astype(np.float32)
            # contact shadow on the road just below the vehicle
            shadow = self.rect(x0 - 1, x1 + 1, y1, y1 + max(1.0, 0.6 * cam.focal * cam.height / z ** 2))
            shadow &= (self.c.surface == SURFACE_GROUND) & (self.c.z > z - 1.0)
            self.c.colour[shadow] *= 0.55

    def poles(self):
        L, cam = self.L, self.cam
        for pole in sorted(L.poles, key=lambda p: -p["z"]):
            z, side = pole["z"], pole["side"]
            x = self.road_centre(z) + side * (self.half + 0.45)
            xc = self.col(x, z)
            half_w = max(0.5 * 0.16 * cam.focal / z, self.thin / 2)
            y0, y1 = self.row(pole["height"], z), self.row(0.0, z)
            zz = np.full((self.S, self.S), z)
            colour = L.colours["pole"]
            self.c.paint(self.rect(xc - half_w, xc + half_w, y0, y1), zz, POLE, colour)
            if pole["kind"] == "lamp":
                arm = 1.6
                x_end = self.col(x - side * arm, z)
                lo, hi = sorted((xc, x_end))
                thick = max(0.14 * cam.focal / z, self.thin * 0.8)
                self.c.paint(self.rect(lo - half_w, hi + half_w, y0, y0 + thick), zz, POLE, colour)
                head_h = max(0.25 * cam.focal / z, self.thin)
                head_w = max(0.7 * cam.focal / z, self.thin * 1.5)
                head = self.rect(x_end - head_w / 2, x_end + head_w / 2, y0 + thick * 0.5, y0 + thick * 0.5 + head_h)
                m = self.c.paint(head, zz, POLE, np.array([0.85, 0.85, 0.8]))
                self.c.emissive[m] = (L.lamp_colour * 9.0).astype(np.float32)
                self.lamps.append((x - side * arm, pole["height"] - 0.2, z))
            else:
                plate = max(0.7 * cam.focal / z, self.thin * 1.6)
                self.c.paint(self.rect(xc - plate / 2, xc + plate / 2, y0, y0 + plate), zz, POLE,
                             L.colours["sign"])

    def sky(self):
        L, S = self.L, self.S
        mask = ~np.isfinite(self.c.z)
        up = np.clip((self.cam.horizon - (np.arange(S) + 0.5)) / max(self.cam.horizon, 1.0), 0, 1)[:, None, None]
        grad = L.colours["sky_horizon"] * (1 - up ** 0.6) + L.colours["sky_zenith"] * up ** 0.6
        clouds = fractal_noise(self.rng, S, S, 3, 4)
        cover = np.clip((clouds - (1.0 - L.light["clouds"])) * 2.5, 0, 1)[..., None]
        colour = grad * (1 - cover) + np.array([0.93, 0.93, 0.95]) * cover
        colour = np.broadcast_to(colour, (S, S, 3))
        self.c.paint(mask, np.full((S, S), 1e12), SKY, colour, SURFACE_SKY)

    def render(self, seed: int) -> Scene:
        self.ground()
        self.backdrop()
        self.facades()
        self.vehicles()
        self.poles()
        self.sky()
        L, S = self.L, self.S
        shading = 1.0 + 0.05 * self.rng.standard_normal((S, S, 1))
        rgb = self.c.colour * L.light["sun_tint"] * L.light["exposure"] * shading
        rgb = np.clip(rgb, 0.0, 1.0)
        z = self.c.z
        ray = np.sqrt(1.0 + self.u[None, :] ** 2 + self.v[:, None] ** 2)
        depth = np.minimum(z * ray, SKY_DEPTH).astype(np.float32)
        return Scene(
            rgb=np.round(rgb * 255).astype(np.uint8), label=self.c.label.copy(), depth=depth,
            seed=int(seed), size=S, camera=self.cam, surface=self.c.surface.copy(),
            emissive=self.c.emissive, lamps=np.asarray(self.lamps, np.float32).reshape(-1, 3),
            road={"offset": L.offset, "slope": L.slope, "half_width": self.half,
                  "lane_width": L.lane_width, "n_lanes": L.n_lanes},
        )


def render_scene(seed: int, size: int) -> Scene:
    """Render street ``seed`` as a clear ``size`` x ``size`` frame with labels and depth."""
    size = int(size)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be within {MIN_SIZE}..{MAX_SIZE} px, got {size}")
    return _Renderer(sample_layout(seed), size).render(seed)


def apply_condition(scene: Scene, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The frame of ``scene`` under ``condition`` (clear/fog/rain/snow/night), uint8 HxWx3."""
    from argus_tasks.data.weather import apply_weather

    return apply_weather(scene, condition, rng)
