"""Image formation of adverse conditions: the hidden process behind the "real" fog/rain/snow/night frames.

Every effect works in linear light on a rendered :class:`~argus_tasks.data.scenes.Scene` and uses
its depth, surfaces, lamps and emitters, so it is richer than what a simple image-space
augmentation can reproduce (which is the point: the learned generator has something to learn
that the non-learned reference cannot fit):

* fog: Koschmieder attenuation ``I = J t + A (1 - t)`` with ``t = exp(-tau)``, where the optical
  depth integrates an exponential height profile of the fog density along each ray and is
  modulated by patchy, spatially varying density; forward scattering blurs the transmitted light,
  multiple scattering adds a halo, colours desaturate, the sensor adds noise and vignetting.
* rain: overcast sky and light, wet darkening of surfaces, mirror-like reflections on the wet
  road, rain haze, motion-blurred streaks in two depth layers, lens drops, defocus, sensor noise.
* snow: snow cover on upward-facing surfaces (lighter in the tyre tracks), frosted vegetation,
  bright haze, lower contrast, flakes at several depths with wind drift, cool white balance.
* night: moonlight ambient, street lamps lighting the scene with inverse-square falloff, ego
  headlight beams, emitters (lamps, car lights, lit windows) with bloom and atmospheric glow,
  light pollution in the sky, auto-exposure, shot and read noise.

Effect strengths are drawn from ``rng`` within plausible ranges, so one scene gives many frames.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from argus_tasks.data import scenes as sc

CONDITIONS = ("clear", "fog", "rain", "snow", "night")
REFERENCE_AREA = 64 * 64  # particle counts are per frame, whatever its size: particles scale with it


# ---- colour and optics helpers ------------------------------------------------------------------

def to_linear(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float64) / 255.0) ** 2.2


def to_display(lin: np.ndarray) -> np.ndarray:
    return np.round(np.clip(lin, 0.0, 1.0) ** (1 / 2.2) * 255.0).astype(np.uint8)


def luminance(lin: np.ndarray) -> np.ndarray:
    return lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722


def blur(img: np.ndarray, sigma: float | tuple) -> np.ndarray:
    sig = (sigma, sigma) if np.isscalar(sigma) else tuple(sigma)
    if max(sig) < 0.05:
        return img
    if img.ndim == 3:
        sig = (*sig, 0)
    return ndimage.gaussian_filter(img, sig, mode="nearest")


def desaturate(lin: np.ndarray, amount) -> np.ndarray:
    amount = np.asarray(amount)
    if amount.ndim == 2:
        amount = amount[..., None]
    return lin * (1 - amount) + luminance(lin)[..., None] * amount


def sensor_noise(lin: np.ndarray, rng, read: float, shot: float, chroma: float = 0.35) -> np.ndarray:
    """Signal-dependent (shot) plus constant (read) noise, partly colour-correlated like a demosaic."""
    sigma = np.sqrt(read ** 2 + shot * np.clip(lin, 0, None))
    n = rng.standard_normal(lin.shape)
    n = n * chroma + n.mean(axis=-1, keepdims=True) * (1 - chroma)
    return lin + n * sigma


def vignette(size: int, strength: float) -> np.ndarray:
    c = (np.arange(size) + 0.5) / size - 0.5
    r2 = (c[None, :] ** 2 + c[:, None] ** 2) / 0.5
    return (1.0 - strength * r2)[..., None]


def line_kernel(length: float, angle: float, width: float = 0.6) -> np.ndarray:
    """A motion-blur kernel: a line of ``length`` px at ``angle`` rad from vertical, values ~1 on it."""
    half = int(np.ceil(length / 2 + 2 * width + 1))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    dy, dx = np.cos(angle), np.sin(angle)
    along = yy * dy + xx * dx
    across = -yy * dx + xx * dy
    k = np.exp(-0.5 * (across / max(width, 0.3)) ** 2) * (np.abs(along) <= length / 2)
    taper = 0.4 + 0.6 * (along + length / 2) / max(length, 1)  # drops are brighter at the head
    return k * taper


def fft_convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``image`` convolved with ``kernel`` (odd-sized), same shape, zero padding."""
    kh, kw = kernel.shape
    h, w = image.shape
    shape = (h + kh - 1, w + kw - 1)
    full = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(kernel, shape), shape)
    return full[kh // 2:kh // 2 + h, kw // 2:kw // 2 + w]


def impulses(rng, size: int, count: int) -> np.ndarray:
    layer = np.zeros((size, size))
    if count > 0:
        ys = rng.integers(0, size, count)
        xs = rng.integers(0, size, count)
        layer[ys, xs] = rng.uniform(0.5, 1.0, count)
    return layer


def overcast_sky(lin, scene, rng, level: float, texture: float = 0.25) -> np.ndarray:
    """Replace the sky by a grey cloud deck of brightness ``level`` (linear)."""
    sky = scene.label == sc.SKY
    if not sky.any():
        return lin
    S = scene.size
    clouds = sc.fractal_noise(rng, S, S, 2, 4)
    up = np.clip((scene.camera.horizon - (np.arange(S) + 0.5)) / max(scene.camera.horizon, 1), 0, 1)[:, None]
    deck = level * (1 + texture * (clouds - 0.5)) * (1.05 - 0.15 * up)
    tint = np.array([0.98, 1.0, 1.03]) * rng.normal(1.0, 0.015, 3)
    out = lin.copy()
    out[sky] = (deck[..., None] * tint)[sky]
    return out


def height_fog_depth(scene, beta0: float, scale_height: float) -> np.ndarray:
    """Optical depth along each ray for density ``beta0 * exp(-y / H)`` (y: height above ground)."""
    _, y, _ = scene.world_xyz()
    d = scene.depth.astype(np.float64)
    hc = scene.camera.height
    dy = y - hc
    flat = np.abs(dy) < 1e-3
    safe = np.where(flat, 1.0, dy)
    mean_density = np.where(flat, np.exp(-hc / scale_height),
                            scale_height * (np.exp(-hc / scale_height) - np.exp(-y / scale_height)) / safe)
    return beta0 * d * mean_density


# ---- conditions -----------------------------------------------------------------------------

def fog(scene, rng) -> np.ndarray:
    S, s = scene.size, scene.size / 64.0
    J = to_linear(scene.rgb) * rng.uniform(0.7, 0.95)  # overcast: less direct sun
    visibility = rng.uniform(35.0, 220.0)  # meteorological optical range, metres
    tau = height_fog_depth(scene, 3.912 / visibility, rng.uniform(15.0, 150.0))
    patchy = sc.fractal_noise(rng, S, S, 2, 4)
    tau = tau * (1.0 + rng.uniform(0.15, 0.55) * 2.0 * (patchy - 0.5))
    t = np.exp(-tau)[..., None]
    up = np.clip(1.0 - (np.arange(S) + 0.5) / S, 0, 1)[:, None, None]
    airlight = rng.uniform(0.55, 0.9) * np.array([1.0, 1.0, 1.0]) * rng.normal(1.0, 0.025, 3)
    airlight = airlight * (0.94 + 0.12 * up)
    keep = np.exp(-rng.uniform(0.3, 0.9) * tau)[..., None]  # unscattered share of the transmitted light
    J = keep * J + (1 - keep) * blur(J, rng.uniform(1.0, 2.5) * s)
    out = J * t + airlight * (1 - t)
    out = out + (blur(out, 3.0 * s) - out) * (0.25 * (1 - t))  # multiple-scattering halo
    out = desaturate(out, rng.uniform(0.15, 0.45) * (1 - t[..., 0]) + 0.1)
    out = out * vignette(S, rng.uniform(0.05, 0.2))
    return to_display(sensor_noise(out, rng, rng.uniform(0.002, 0.006), rng.uniform(0.0005, 0.002)))


def rain(scene, rng) -> np.ndarray:
    S, s = scene.size, scene.size / 64.0
    J = to_linear(scene.rgb) * rng.uniform(0.45, 0.75)
    ground = scene.surface == sc.SURFACE_GROUND
    upright = scene.surface == sc.SURFACE_UPRIGHT
    wet = np.ones((S, S))
    wet[ground] = rng.uniform(0.45, 0.7)
    wet[upright] = rng.uniform(0.75, 0.92)
    J = J * wet[..., None]
    J = overcast_sky(J, scene, rng, rng.uniform(0.25, 0.5))
    J = desaturate(J, rng.uniform(0.25, 0.5))
    # the wet road mirrors what stands on it: flip about the horizon, smear vertically
    rows = np.clip(np.round(2 * scene.camera.horizon - (np.arange(S) + 0.5)).astype(int), 0, S - 1)
    mirror = blur(J[rows], (rng.uniform(2.0, 5.0) * s, 0.7 * s))
    v = np.clip(((np.arange(S) + 0.5) - scene.camera.horizon) / S, 0, 1)[:, None]
    fresnel = np.clip(0.55 - 1.6 * v, 0.05, 0.5) * rng.uniform(0.5, 1.0)
    puddles = sc.fractal_noise(rng, S, S, 4, 3)
    gloss = np.where(ground, fresnel * (0.6 + 0.8 * puddles), 0.0)
    gloss = np.where(scene.label == sc.ROAD, gloss, gloss * 0.5)[..., None]
    J = J * (1 - gloss) + mirror * gloss
    # rain haze
    t = np.exp(-rng.uniform(0.004, 0.02) * scene.depth.astype(np.float64))[..., None]
    J = J * t + rng.uniform(0.25, 0.45) * (1 - t)
    # streaks: far (short, faint) and near (long, soft) layers falling at a wind angle
    angle = rng.uniform(-0.35, 0.35)
    for count_per_px, length, width, alpha, soft in ((0.006, (3, 7), 0.4, (0.1, 0.2), 0.0),
                                                     (0.0015, (9, 18), 0.9, (0.15, 0.3), 0.8)):
        layer = impulses(rng, S, int(rng.uniform(0.5, 1.5) * count_per_px * REFERENCE_AREA))
        kern = line_kernel(rng.uniform(*length) * s, angle + rng.normal(0, 0.04), width * s)
        streaks = np.clip(fft_convolve(layer, kern), 0, 1)
        if soft:
            streaks = blur(streaks, soft * s)
        a = rng.uniform(*alpha)
        J = J + a * streaks[..., None] * (0.75 - J)
    # drops on the windscreen: refracted, defocused patches
    out = blur(J, rng.uniform(0.4, 1.0) * s)
    smeared = blur(out[::-1], 3.0 * s)
    yy, xx = np.mgrid[0:S, 0:S]
    for _ in range(rng.integers(0, 4)):
        cy, cx, r = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(1.2, 3.5) * s
        drop = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        out[drop] = 0.5 * out[drop] + 0.5 * (smeared[drop] * 1.1 + 0.02)
    out = out * vignette(S, rng.uniform(0.1, 0.3))
    return to_display(sensor_noise(out, rng, rng.uniform(0.003, 0.008), rng.uniform(0.001, 0.003)))


def snow(scene, rng) -> np.ndarray:
    S, s = scene.size, scene.size / 64.0
    J = to_linear(scene.rgb) * rng.uniform(0.6, 0.85)
    J = overcast_sky(J, scene, rng, rng.uniform(0.5, 0.8), texture=0.15)
    snow_rgb = rng.uniform(0.7, 0.92) * np.array([0.95, 0.98, 1.03])
    ground = scene.surface == sc.SURFACE_GROUND
    cover_noise = sc.fractal_noise(rng, S, S, 5, 4)
    depth_snow = rng.uniform(0.2, 0.8)  # how much has fallen
    cover = np.clip((cover_noise - (0.75 - depth_snow)) * 3.0, 0, 1)
    # tyre tracks on the road stay darker
    x, _, z = scene.world_xyz()
    road = scene.road
    xr = x - (road["offset"] + road["slope"] * z)
    lane_pos = (xr + road["half_width"]) / road["lane_width"] - 0.5
    in_lane = np.abs(lane_pos - np.round(lane_pos)) * road["lane_width"]
    tracks = np.abs(in_lane - 0.8) < 0.35
    on_road = np.isin(scene.label, (sc.ROAD, sc.LANE))
    cover = np.where(ground & on_road & tracks, cover * rng.uniform(0.1, 0.4), cover)
    cover = np.where(ground & ~on_road, np.clip(cover * 1.5 + 0.2, 0, 1), cover)
    trees = (scene.label == sc.VEGETATION) & (scene.surface == sc.SURFACE_UPRIGHT)
    frost = np.clip((sc.fractal_noise(rng, S, S, max(4, S // 6), 2) - 0.45) * 2.5, 0, 1) * rng.uniform(0.3, 0.7)
    cover = np.where(ground, cover, np.where(trees, frost, 0.0))
    J = J * (1 - cover[..., None]) + snow_rgb * cover[..., None]
    # bright haze and lower contrast
    t = np.exp(-rng.uniform(0.008, 0.035) * scene.depth.astype(np.float64))[..., None]
    J = J * t + rng.uniform(0.6, 0.85) * (1 - t)
    mean = J.mean(axis=(0, 1), keepdims=True)
    J = mean + (J - mean) * rng.uniform(0.72, 0.92)
    # flakes at three depths, drifting with the wind
    drift = rng.uniform(-0.6, 0.6)
    for count_per_px, sigma, alpha in ((0.01, 0.35, 0.7), (0.003, 0.9, 0.55), (0.0004, 2.2, 0.45)):
        layer = impulses(rng, S, int(rng.uniform(0.5, 1.5) * count_per_px * REFERENCE_AREA))
        flakes = blur(layer, sigma * s) * (2 * np.pi * (sigma * s) ** 2) ** 0.8
        flakes = fft_convolve(flakes, line_kernel(1.5 * s * (1 + sigma), drift, 0.5 * s)) / (1.5 * s * (1 + sigma))
        J = J + rng.uniform(0.6, 1.0) * alpha * np.clip(flakes, 0, 1)[..., None] * (0.95 - J)
    J = desaturate(J, rng.uniform(0.15, 0.35)) * np.array([0.96, 0.99, 1.04])
    out = blur(J, rng.uniform(0.3, 0.8) * s) * vignette(S, rng.uniform(0.05, 0.2))
    return to_display(sensor_noise(out, rng, rng.uniform(0.002, 0.006), rng.uniform(0.0005, 0.002)))


def night(scene, rng) -> np.ndarray:
    S, s = scene.size, scene.size / 64.0
    albedo = to_linear(scene.rgb)
    x, y, z = scene.world_xyz()
    ground = scene.surface == sc.SURFACE_GROUND
    light = np.zeros((S, S, 3)) + rng.uniform(0.004, 0.02) * np.array([0.7, 0.82, 1.1])  # moon + sky glow
    lamp_rgb = _lamp_colour(scene)
    power = rng.uniform(15.0, 45.0)
    for lx, ly, lz in scene.lamps:
        dx, dy, dz = x - lx, y - ly, z - lz
        r2 = dx * dx + dy * dy + dz * dz + 0.5
        cos = np.where(ground, np.clip(-dy / np.sqrt(r2), 0, 1), 0.35)
        light += (power * cos / r2)[..., None] * lamp_rgb
    # ego low beams: two lamps 0.65 m up, aimed slightly down, a cone along the road
    beam_power = rng.uniform(60.0, 160.0)
    for hx in (-0.7, 0.7):
        zz = np.maximum(z, 0.5)
        ax = np.arctan2(x - hx, zz)
        ay = np.arctan2(y - 0.65, zz)
        cone = np.exp(-(ax / 0.38) ** 2 - ((ay + 0.02) / 0.09) ** 2)
        r2 = (x - hx) ** 2 + (y - 0.65) ** 2 + zz ** 2
        cos = np.where(ground, np.clip(0.65 / np.sqrt(r2), 0.02, 1) * 6, 0.8)
        light += (beam_power * cone * cos / r2)[..., None] * np.array([1.0, 0.97, 0.9])
    out = albedo * light
    sky = scene.label == sc.SKY
    up = np.clip((scene.camera.horizon - (np.arange(S) + 0.5)) / S, 0, 1)[:, None, None]
    glow = rng.uniform(0.004, 0.03) * np.exp(-up / rng.uniform(0.08, 0.2)) * np.array([1.0, 0.7, 0.45])
    sky_rgb = rng.uniform(0.0015, 0.006) * np.array([0.5, 0.6, 1.0]) + glow
    out = np.where(sky[..., None], np.broadcast_to(sky_rgb, out.shape), out)
    emit = scene.emissive.astype(np.float64) * rng.uniform(0.6, 1.4)
    emit *= np.where(scene.label == sc.BUILDING, rng.uniform(0.3, 1.2), 1.0)[..., None]  # how many windows are lit
    out = out + emit
    haze = rng.uniform(0.3, 1.0)  # humidity: how far halos spread
    out = out + blur(emit, 1.2 * s) * 0.35 + blur(emit, 4.0 * s) * 0.08 * haze + blur(emit, 12.0 * s) * 0.03 * haze
    # auto-exposure towards a dim target, limited gain
    gain = np.clip(rng.uniform(0.012, 0.03) / max(np.median(luminance(out)), 1e-5), 1.0, 6.0)
    out = out * gain * np.array([1.0, 1.0, 1.0]) * rng.normal(1.0, 0.03, 3)
    out = blur(out, rng.uniform(0.2, 0.6) * s)
    out = sensor_noise(out, rng, rng.uniform(0.003, 0.008) * gain ** 0.5, rng.uniform(0.001, 0.004))
    return to_display(out * vignette(S, rng.uniform(0.15, 0.35)))


def _lamp_colour(scene) -> np.ndarray:
    """The colour of the street lamps, read from their emitters."""
    heads = (scene.label == sc.POLE) & (scene.emissive.sum(-1) > 0)
    if heads.any():
        c = scene.emissive[heads].mean(axis=0).astype(np.float64)
        return c / c.max()
    return np.array([1.0, 0.8, 0.6])


_APPLY = {"fog": fog, "rain": rain, "snow": snow, "night": night}


def apply_weather(scene, condition: str, rng: np.random.Generator) -> np.ndarray:
    if condition == "clear":
        return scene.rgb.copy()
    try:
        fn = _APPLY[condition]
    except KeyError:
        raise ValueError(f"unknown condition {condition!r}; choose one of {', '.join(CONDITIONS)}") from None
    return fn(scene, rng)
