"""The stimulus of a simulated study: the movie, its soundtrack, annotations and transcript.

Procedural scenes (a place with a textured background, one to three moving discs or
squares, flashes, camera pans, and one sound: chords, noise bursts, silence or speech) tile
the movie; each scene has a sentence describing what is seen and heard, narrated word by
word in the transcript. :func:`_write_stimulus` writes ``stimulus/movie.mp4`` (with the
soundtrack), ``annotations.tsv`` and ``transcript.tsv`` and returns what the brain
simulation (:mod:`cinebrain.data.simulate.fmri`) needs: the scenes, the soundtrack and the
visual ground-truth features accumulated while the frames were rendered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SR = 16000  # soundtrack sample rate (Hz)
N_MELS = 64  # mel bands of the auditory ground truth
BIN_S = 0.25  # feature bin (s) before TR resampling
GRID_W = 32  # columns of the downsampled grayscale frame of the visual ground truth

# --------------------------------------------------------------------------------------
# vocabulary of the scene grammar
# --------------------------------------------------------------------------------------

# name, indoor, colour a, colour b, texture
LOCATIONS: list[tuple[str, int, tuple[int, int, int], tuple[int, int, int], str]] = [
    ("kitchen", 1, (200, 180, 140), (120, 90, 60), "checker"),
    ("office", 1, (170, 170, 180), (90, 100, 120), "stripes"),
    ("library", 1, (110, 70, 40), (200, 160, 100), "stripes"),
    ("bedroom", 1, (150, 110, 160), (60, 40, 80), "blobs"),
    ("hallway", 1, (190, 190, 160), (80, 80, 70), "gradient"),
    ("classroom", 1, (120, 160, 120), (220, 220, 200), "checker"),
    ("warehouse", 1, (90, 90, 90), (160, 140, 110), "stripes"),
    ("museum", 1, (230, 220, 200), (140, 120, 100), "gradient"),
    ("forest", 0, (30, 110, 40), (90, 160, 60), "blobs"),
    ("beach", 0, (120, 190, 240), (230, 210, 150), "sky"),
    ("desert", 0, (240, 200, 120), (200, 140, 70), "sky"),
    ("street", 0, (100, 100, 110), (200, 200, 210), "stripes"),
    ("park", 0, (140, 200, 250), (70, 150, 60), "sky"),
    ("harbour", 0, (60, 110, 170), (30, 60, 100), "blobs"),
    ("mountain", 0, (170, 200, 230), (110, 100, 90), "sky"),
    ("cave", 0, (50, 40, 35), (110, 95, 80), "blobs"),
]

PLACE_WORDS: dict[str, list[str]] = {
    "kitchen": ["kitchen", "tiled kitchen"],
    "office": ["office", "open-plan office"],
    "library": ["library", "reading room"],
    "bedroom": ["bedroom", "small bedroom"],
    "hallway": ["hallway", "long corridor"],
    "classroom": ["classroom", "school classroom"],
    "warehouse": ["warehouse", "storage hall"],
    "museum": ["museum", "gallery"],
    "forest": ["forest", "pine wood"],
    "beach": ["beach", "sandy shore"],
    "desert": ["desert", "dune field"],
    "street": ["city street", "busy avenue"],
    "park": ["park", "grassy meadow"],
    "harbour": ["harbour", "quiet marina"],
    "mountain": ["mountain pass", "rocky ridge"],
    "cave": ["cave", "underground grotto"],
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (250, 230, 40),
    "green": (40, 200, 60),
    "cyan": (40, 220, 230),
    "blue": (40, 70, 230),
    "purple": (140, 50, 200),
    "pink": (250, 130, 190),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
    "brown": (130, 80, 40),
    "golden": (230, 190, 60),
    "crimson": (170, 10, 50),
    "turquoise": (60, 200, 180),
    "violet": (200, 120, 240),
}

NOUNS = {
    "disc": ["ball", "sphere", "balloon", "orb", "marble", "bubble"],
    "square": ["box", "block", "cube", "crate", "tile", "brick"],
}
VERBS = {
    "bounce": ["bounces", "ricochets", "rebounds", "hops"],
    "drift": ["drifts", "glides", "floats", "slides"],
    "circle": ["circles", "spins around", "orbits", "loops"],
    "zigzag": ["zigzags", "darts", "weaves", "jitters"],
}
SLOW_ADVERBS = ["slowly", "lazily", "gently", "calmly"]
FAST_ADVERBS = ["quickly", "rapidly", "wildly", "briskly"]
DARK_WORDS = ["dark", "dim", "gloomy", "shadowy"]
BRIGHT_WORDS = {
    1: ["brightly lit", "sunny", "well lit", "glowing"],
    0: ["sunlit", "bright", "dazzling", "sunny"],
}
MID_WORDS = ["quiet", "plain", "ordinary", "still"]
SOUND_PHRASES = {
    "chord_low": ["a low chord hums", "deep organ tones drone", "a bass note rumbles"],
    "chord_mid": ["a gentle melody plays", "soft chords ring out", "warm music swells"],
    "chord_high": ["a high tone whistles", "bright chimes ring", "a shrill melody sings"],
    "noise": [
        "bursts of static crackle",
        "rain patters in loud bursts",
        "a harsh hiss comes and goes",
    ],
    "silence": ["everything is silent", "no sound can be heard", "the air is perfectly still"],
    "speech": ["a voice murmurs", "someone talks quietly", "a narrator speaks softly"],
}
FLASH_SENTENCES = ["Lightning flashes.", "A light flickers.", "A camera flash goes off."]
SOUND_TYPES = ["chord", "noise", "silence", "speech"]
SOUND_PROBS = [0.35, 0.2, 0.15, 0.3]
MOTIONS = ["bounce", "drift", "circle", "zigzag"]


# --------------------------------------------------------------------------------------
# scenes
# --------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """A moving coloured disc or square (pixel units at the rendered size)."""

    shape: str
    colour: str
    radius: float
    motion: str
    x0: float
    y0: float
    vx: float
    vy: float
    phase: float
    size_word: str = ""
    noun: str = ""
    verb: str = ""
    adverb: str = ""


@dataclass
class Scene:
    """One shot of the movie: a place, objects, a sound and a description."""

    onset: float
    offset: float
    location: str
    indoor: int
    brightness: float
    texture_seed: int
    texture_params: dict
    pan: float
    objects: list[SceneObject]
    flashes: list[float]
    sound: str
    sound_params: dict
    description: str = ""
    words: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def music(self) -> int:
        return int(self.sound == "chord")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _make_scenes(rng: np.random.Generator, total: float, size: tuple[int, int]) -> list[Scene]:
    """Random scenes tiling ``[0, total)``; boundaries on a 0.5 s grid."""
    width, height = size
    bounds = [0.0]
    while bounds[-1] < total:
        bounds.append(bounds[-1] + float(np.round(rng.uniform(4.0, 12.0) * 2) / 2))
    bounds[-1] = total
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 4.0:  # share the rest with the last scene
        bounds[-2] = float(np.round((bounds[-3] + total) / 2 * 2) / 2)
    scenes = []
    prev_loc = None
    for on, off in zip(bounds[:-1], bounds[1:], strict=True):
        loc_i = int(rng.integers(len(LOCATIONS)))
        while loc_i == prev_loc:
            loc_i = int(rng.integers(len(LOCATIONS)))
        prev_loc = loc_i
        name, indoor, _, _, texture = LOCATIONS[loc_i]
        n_obj = int(rng.integers(1, 4))
        objects = []
        colour_names = list(COLOURS)
        chosen = rng.choice(len(colour_names), size=n_obj, replace=False)
        for k in range(n_obj):
            shape = "disc" if rng.random() < 0.55 else "square"
            radius = float(rng.uniform(0.05, 0.2) * height)
            speed = float(rng.uniform(0.08, 0.6) * width)  # px/s
            angle = float(rng.uniform(0, 2 * np.pi))
            motion = _pick(rng, MOTIONS)
            objects.append(
                SceneObject(
                    shape=shape,
                    colour=colour_names[int(chosen[k])],
                    radius=radius,
                    motion=motion,
                    x0=float(rng.uniform(radius, width - radius)),
                    y0=float(rng.uniform(radius, height - radius)),
                    vx=speed * math.cos(angle),
                    vy=speed * math.sin(angle),
                    phase=float(rng.uniform(0, 2 * np.pi)),
                    size_word="tiny "
                    if radius < 0.07 * height
                    else ("large " if radius > 0.16 * height else ""),
                    noun=_pick(rng, NOUNS[shape]),
                    verb=_pick(rng, VERBS[motion]),
                    adverb=_pick(rng, FAST_ADVERBS if speed > 0.3 * width else SLOW_ADVERBS),
                )
            )
        n_flash = int(rng.integers(1, 4)) if rng.random() < 0.25 else 0
        flashes = sorted(float(on + rng.uniform(0.5, off - on - 0.3)) for _ in range(n_flash))
        sound = SOUND_TYPES[int(rng.choice(4, p=SOUND_PROBS))]
        sp: dict[str, Any] = {"level_db": float(rng.uniform(-28, -10))}
        if sound == "chord":
            f0 = float(np.exp(rng.uniform(np.log(110), np.log(1400))))
            ratios = [1.0, 1.25, 1.5, 2.0, 1.2, 1.333]
            sp["freqs"] = [
                f0 * r for r in rng.choice(ratios, size=int(rng.integers(2, 5)), replace=False)
            ]
            sp["register"] = (
                "chord_low" if f0 < 250 else ("chord_mid" if f0 < 600 else "chord_high")
            )
        elif sound == "noise":
            lo = float(np.exp(rng.uniform(np.log(150), np.log(3000))))
            sp["band"] = [lo, min(7500.0, lo * float(rng.uniform(1.5, 4.0)))]
            sp["burst"] = [float(rng.uniform(0.08, 0.3)), float(rng.uniform(0.1, 0.6))]
        elif sound == "speech":
            sp["f0"] = float(rng.uniform(95, 230))
            sp["formants"] = [
                float(rng.uniform(400, 900)),
                float(rng.uniform(1100, 2200)),
                float(rng.uniform(2400, 3200)),
            ]
            sp["syllable_rate"] = float(rng.uniform(3.0, 6.0))
        brightness = float(rng.uniform(0.3, 1.0))
        tp = {
            "texture": texture,
            "freq": float(rng.uniform(2.0, 9.0)),
            "angle": float(rng.uniform(0, np.pi)),
            "contrast": float(rng.uniform(0.4, 1.0)),
            "horizon": float(rng.uniform(0.3, 0.7)),
        }
        pan = float(rng.uniform(-0.15, 0.15) * width) if rng.random() < 0.35 else 0.0
        scene = Scene(
            onset=float(on),
            offset=float(off),
            location=name,
            indoor=indoor,
            brightness=brightness,
            texture_seed=int(rng.integers(2**31)),
            texture_params=tp,
            pan=pan,
            objects=objects,
            flashes=flashes,
            sound=sound,
            sound_params=sp,
        )
        scene.description = _describe(rng, scene)
        scenes.append(scene)
    return scenes


def _describe(rng: np.random.Generator, scene: Scene) -> str:
    """A sentence (or two) describing what is seen and heard in ``scene``."""

    def obj_phrase(o: SceneObject, article: bool = True) -> str:
        words = f"{o.size_word}{o.colour} {o.noun}"
        return f"{_article(words)} {words}" if article else words

    if scene.brightness < 0.5:
        light = _pick(rng, DARK_WORDS)
    elif scene.brightness > 0.8:
        light = _pick(rng, BRIGHT_WORDS[scene.indoor])
    else:
        light = _pick(rng, MID_WORDS)
    place = f"{light} {_pick(rng, PLACE_WORDS[scene.location])}"
    place = f"{_article(place)} {place}"
    key = scene.sound_params.get("register", scene.sound)
    sound = _pick(rng, SOUND_PHRASES[key])
    first, *others = scene.objects
    rest = ""
    for j, o in enumerate(others):
        joiner = ", and " if j == len(others) - 1 else ", "
        rest += f"{joiner}{obj_phrase(o)} {o.verb}"
    o1 = f"{obj_phrase(first)} {first.verb} {first.adverb}"
    template = int(rng.integers(4))
    if template == 0:
        text = f"{o1} across {place}{rest} while {sound}."
    elif template == 1:
        text = f"In {place}, {o1}{rest}; {sound}."
    elif template == 2:
        text = f"{sound} as {o1} through {place}{rest}."
    else:
        text = f"{place}: {o1}{rest}, and {sound}."
    text = text[0].upper() + text[1:]
    if scene.flashes:
        text += " " + _pick(rng, FLASH_SENTENCES)
    return text


def _words_for(scene: Scene) -> list[tuple[str, float, float]]:
    """The narrated description's words, spread evenly over the scene."""
    words = re.findall(r"[A-Za-z'-]+", scene.description)
    if not words:
        return []
    start, stop = scene.onset + 0.25, scene.offset - 0.25
    slot = (stop - start) / len(words)
    return [
        (w.lower(), round(start + i * slot, 3), round(start + i * slot + 0.8 * slot, 3))
        for i, w in enumerate(words)
    ]


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------


def _texture(scene: Scene, width: int, height: int) -> np.ndarray:
    """The scene's background as uint8 ``(height, width, 3)``."""
    tp = scene.texture_params
    rng = np.random.default_rng(scene.texture_seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    kind = tp["texture"]
    if kind == "stripes":
        t = 0.5 + 0.5 * np.sin(
            2 * np.pi * tp["freq"] * (u * np.cos(tp["angle"]) + v * np.sin(tp["angle"]))
        )
    elif kind == "checker":
        n = max(2, int(tp["freq"]))
        t = ((np.floor(u * n) + np.floor(v * n * height / width)) % 2).astype(np.float32)
    elif kind == "gradient":
        t = v
    elif kind == "sky":
        t = 1.0 / (1.0 + np.exp(-(v - tp["horizon"]) * 40.0))
    else:  # blobs: smooth noise, periodic horizontally so panning has no seam
        from scipy.ndimage import gaussian_filter

        small = rng.standard_normal((max(4, height // 8), max(4, width // 8))).astype(np.float32)
        small = gaussian_filter(small, 1.5, mode="wrap")
        reps = (int(math.ceil(height / small.shape[0])), int(math.ceil(width / small.shape[1])))
        big = np.kron(small, np.ones(reps, np.float32))[:height, :width]
        t = 1.0 / (1.0 + np.exp(-big / (big.std() + 1e-6) * 2.0))
    t = 0.5 + (t - 0.5) * tp["contrast"]
    _, _, ca, cb, _ = next(loc for loc in LOCATIONS if loc[0] == scene.location)
    ca_arr, cb_arr = np.array(ca, np.float32), np.array(cb, np.float32)
    img = (ca_arr * (1 - t[..., None]) + cb_arr * t[..., None]) * scene.brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def _reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = max(hi - lo, 1e-6)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q < span, q, 2 * span - q)


def _trajectory(
    o: SceneObject, t: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Object centre (x, y) in pixels at scene times ``t`` (s)."""
    r = o.radius
    if o.motion == "bounce":
        return _reflect(o.x0 + o.vx * t, r, width - r), _reflect(o.y0 + o.vy * t, r, height - r)
    if o.motion == "drift":
        return np.mod(o.x0 + o.vx * t + r, width + 2 * r) - r, _reflect(
            o.y0 + 0.3 * o.vy * t, r, height - r
        )
    if o.motion == "circle":
        rad = min(width, height) * 0.3
        w = math.hypot(o.vx, o.vy) / rad * math.copysign(1.0, o.vx)
        cx = float(np.clip(o.x0, rad, width - rad)) if width > 2 * rad else width / 2
        cy = height / 2
        return cx + rad * np.cos(w * t + o.phase), cy + rad * 0.8 * np.sin(w * t + o.phase)
    # zigzag: steady horizontal drift, fast vertical bouncing
    return (
        np.mod(o.x0 + 0.5 * o.vx * t + r, width + 2 * r) - r,
        _reflect(o.y0 + 3.0 * abs(o.vy) * t + 1.0, r, height - r),
    )


def _draw(frame: np.ndarray, o: SceneObject, x: float, y: float) -> None:
    height, width = frame.shape[:2]
    r = o.radius
    x0, x1 = max(0, int(x - r)), min(width, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(height, int(y + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    colour = np.array(COLOURS[o.colour], np.uint8)
    if o.shape == "square":
        frame[y0:y1, x0:x1] = colour
        return
    yy = (np.arange(y0, y1, dtype=np.float32) - y)[:, None]
    xx = (np.arange(x0, x1, dtype=np.float32) - x)[None, :]
    frame[y0:y1, x0:x1][xx * xx + yy * yy <= r * r] = colour


def _frames(
    scenes: list[Scene], n_frames: int, fps: float, size: tuple[int, int], acc: _VisualAccumulator
) -> Iterator[np.ndarray]:
    """Render the movie frame by frame (uint8 RGB), feeding ``acc`` on the way."""
    width, height = size
    i = 0
    for si, scene in enumerate(scenes):
        stop = (
            n_frames
            if si == len(scenes) - 1
            else int(np.searchsorted(np.arange(n_frames) / fps, scene.offset - 1e-9))
        )
        if stop <= i:
            continue
        bg = _texture(scene, width, height)
        t_scene = np.arange(i, stop) / fps - scene.onset
        trajs = [_trajectory(o, t_scene, width, height) for o in scene.objects]
        flash_on = np.zeros(stop - i, bool)
        for ft in scene.flashes:
            flash_on |= (t_scene >= ft - scene.onset) & (t_scene < ft - scene.onset + 0.125)
        for j in range(stop - i):
            shift = int(round(scene.pan * t_scene[j])) % width
            frame = np.roll(bg, shift, axis=1) if shift else bg.copy()
            for o, (xs, ys) in zip(scene.objects, trajs, strict=True):
                _draw(frame, o, float(xs[j]), float(ys[j]))
            if flash_on[j]:
                frame = (frame.astype(np.uint16) * 3 // 10 + 178).astype(np.uint8)
            acc.add(frame)
            yield frame
        i = stop


class _VisualAccumulator:
    """Downsampled grayscale and absolute frame difference, averaged per ``BIN_S`` bin."""

    def __init__(self, n_frames: int, fps: float, size: tuple[int, int]):
        width, height = size
        self.block = max(1, width // GRID_W)
        self.gw, self.gh = width // self.block, height // self.block
        self.per_bin = max(1, int(round(fps * BIN_S)))
        n_bins = int(math.ceil(n_frames / self.per_bin))
        self.lum = np.zeros((n_bins, self.gh * self.gw), np.float32)
        self.mot = np.zeros((n_bins, self.gh * self.gw), np.float32)
        self.count = np.zeros(n_bins, np.int64)
        self.fps = fps
        self.n_frames = n_frames
        self.i = 0
        self.prev: np.ndarray | None = None
        self.weights = np.array([0.299, 0.587, 0.114], np.float32) / 255.0

    def add(self, frame: np.ndarray) -> None:
        b, gh, gw = self.block, self.gh, self.gw
        gray = frame[: gh * b, : gw * b].astype(np.float32) @ self.weights
        diff = np.abs(gray - self.prev) if self.prev is not None else np.zeros_like(gray)
        self.prev = gray
        k = self.i // self.per_bin
        self.lum[k] += gray.reshape(gh, b, gw, b).mean(axis=(1, 3)).ravel()
        self.mot[k] += diff.reshape(gh, b, gw, b).mean(axis=(1, 3)).ravel()
        self.count[k] += 1
        self.i += 1

    def spaces(self) -> tuple[Any, Any]:
        from cinebrain.features.base import FeatureSpace

        n = np.maximum(self.count, 1)[:, None]
        onsets = np.arange(len(self.count)) * self.per_bin / self.fps
        durations = self.count / self.fps
        return (
            FeatureSpace("truth_luminance", self.lum / n, onsets, durations, method="mean"),
            FeatureSpace("truth_motion", self.mot / n, onsets, durations, method="mean"),
        )


def _soundtrack(scenes: list[Scene], total: float, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 soundtrack at ``SR`` Hz, one sound type per scene."""
    n_total = int(round(total * SR))
    audio = rng.standard_normal(n_total).astype(np.float32) * 10 ** (-60 / 20)  # room tone
    for scene in scenes:
        a, b = int(round(scene.onset * SR)), min(n_total, int(round(scene.offset * SR)))
        n = b - a
        if n <= 0:
            continue
        t = np.arange(n, dtype=np.float64) / SR
        sp = scene.sound_params
        if scene.sound == "chord":
            sig = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in sp["freqs"])
            sig = sig / len(sp["freqs"])
        elif scene.sound == "noise":
            spec = np.fft.rfft(rng.standard_normal(n))
            freqs = np.fft.rfftfreq(n, 1 / SR)
            spec[(freqs < sp["band"][0]) | (freqs > sp["band"][1])] = 0
            sig = np.fft.irfft(spec, n)
            sig /= sig.std() + 1e-9
            on_s, off_s = sp["burst"]
            period = on_s + off_s
            sig *= (np.mod(t + rng.uniform(0, period), period) < on_s).astype(np.float64)
            sig *= 0.5
        elif scene.sound == "speech":
            f0 = sp["f0"] * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
            phase = 2 * np.pi * np.cumsum(f0) / SR
            sig = np.zeros(n)
            for h in range(1, int(3500 // sp["f0"]) + 1):
                w = sum(np.exp(-0.5 * ((h * sp["f0"] - fm) / 150.0) ** 2) for fm in sp["formants"])
                sig += (w + 0.05) * np.sin(h * phase)
            sig /= np.abs(sig).max() + 1e-9
            gate = np.zeros(n)
            for _, w_on, w_off in scene.words:  # voiced bursts on the narrated words
                i0, i1 = int((w_on - scene.onset) * SR), int((w_off - scene.onset) * SR)
                if i1 > i0:
                    gate[i0:i1] = np.sin(np.linspace(0, np.pi, i1 - i0))
            am = 0.6 + 0.4 * np.sin(2 * np.pi * sp["syllable_rate"] * t)
            sig *= gate * am
        else:
            continue
        # loudness changes: steps of +-8 dB every 1-3 s, with 50 ms ramps
        knots, levels = [0.0], [sp["level_db"]]
        while knots[-1] < t[-1]:
            knots.append(knots[-1] + float(rng.uniform(1.0, 3.0)))
            levels.append(sp["level_db"] + float(rng.uniform(-8, 8)))
        kt = np.repeat(knots, 2)[1:]
        kt[1::2] += 0.05
        kl = np.repeat(levels, 2)[:-1]
        gain = 10 ** (np.interp(t, kt, kl) / 20)
        fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
        audio[a:b] += (sig * gain * fade).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


# --------------------------------------------------------------------------------------
# the stimulus folder
# --------------------------------------------------------------------------------------


def _write_stimulus(
    stim: Path,
    rng_movie: np.random.Generator,
    rng_audio: np.random.Generator,
    total: float,
    n_frames: int,
    fps: float,
    size: tuple[int, int],
    progress: bool,
) -> tuple[list[Scene], np.ndarray, tuple[Any, Any]]:
    """Write the movie, annotations and transcript into ``stim``.

    Returns the scenes, the soundtrack (float32 at ``SR`` Hz) and the visual ground-truth
    feature spaces (luminance, motion) of the rendered frames.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from cinebrain.io.video import write_video

    width, height = size
    scenes = _make_scenes(rng_movie, total, size)
    for s in scenes:
        s.words = _words_for(s)
    stim.mkdir(parents=True)
    ann = pd.DataFrame(
        {
            "onset": [s.onset for s in scenes],
            "offset": [s.offset for s in scenes],
            "description": [s.description for s in scenes],
            "location": [s.location for s in scenes],
            "indoor": [s.indoor for s in scenes],
            "n_objects": [len(s.objects) for s in scenes],
            "music": [s.music for s in scenes],
            "sound": [s.sound for s in scenes],
            "flash": [int(bool(s.flashes)) for s in scenes],
        }
    )
    ann.to_csv(stim / "annotations.tsv", sep="\t", index=False)
    words = [w for s in scenes for w in s.words]
    pd.DataFrame(words, columns=["word", "onset", "offset"]).to_csv(
        stim / "transcript.tsv", sep="\t", index=False
    )

    audio = _soundtrack(scenes, total, rng_audio)
    acc = _VisualAccumulator(n_frames, fps, size)
    frames = _frames(scenes, n_frames, fps, size, acc)
    with tqdm(total=n_frames, desc="simulate: movie", unit="frame", disable=not progress) as bar:

        def counted() -> Iterator[np.ndarray]:
            for f in frames:
                yield f
                bar.update(1)

        write_video(
            stim / "movie.mp4", counted(), fps=fps, size=(width, height), audio=audio, sr=SR
        )
    return scenes, audio, acc.spaces()
