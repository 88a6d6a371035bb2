"""A simulated naturalistic-viewing study with known ground truth.

:func:`simulate_study` writes, in the formats a user brings, a movie (procedural scenes
with a soundtrack), its annotations and transcript, 4D BOLD NIfTI files for several
subjects and runs, a study YAML, and a ``ground_truth/`` folder saying which voxels are
driven by what and how strongly. It is cinebrain's embedded demo dataset and its test
fixture.

The ground truth is *linear in what cinebrain's own features can see*, so the pipeline
(features from the mp4 -> TR resampling -> causal HRF -> banded ridge) can recover it:

* visual voxels (occipital cortex, MNI y < -70 mm): luminance and local motion energy
  (absolute frame difference) inside a Gaussian receptive field on a downsampled
  grayscale frame; receptive-field centres vary smoothly with voxel position
  (retinotopy-like: left hemisphere sees the right half of the frame, dorsal voxels the
  lower half, posterior voxels the centre);
* auditory voxels (bilateral superior temporal spheres): log-mel energy in a preferred
  frequency band of the soundtrack, the preference varying along the anterior-posterior
  axis (tonotopy-like);
* language voxels (a left-lateralised network: IFG, posterior temporal / angular,
  anterior temporal): a projection of the sentence embedding of the scene description
  (:func:`cinebrain.features.text_model.embed_texts`) on a few latent directions shared
  by neighbouring voxels.

Each stimulus feature is put on each run's TR grid with :func:`cinebrain.timing.resample`
(the same call the pipeline makes), projected to a voxel drive, convolved causally with
the canonical HRF per run (:func:`cinebrain.timing.convolve_hrf`) and z-scored: that is
the clean signal, shared by all subjects. Each subject adds its own noise (AR(1),
a low-rank "physiological" component with smooth spatial maps, and slow drift), scaled
per voxel to the voxel's true SNR times a subject-level factor, on a spatially smooth
baseline of about 1000. Voxels outside the brain mask are 0.

Timing follows the package convention: volume ``k`` of a run covers scan time
``[k * tr, (k + 1) * tr)``; run ``r`` shows stimulus seconds
``[r * run_duration, (r + 1) * run_duration)`` starting at scan time ``fixation``.

Layout written under ``out_dir`` (atomically: built in a hidden sibling folder, then
renamed, so an interrupted simulation never leaves a folder that looks complete)::

    study.yaml
    stimulus/movie.mp4  stimulus/annotations.tsv  stimulus/transcript.tsv
    sub-01/func/sub-01_run-1_bold.nii.gz ...
    ground_truth/mask.nii.gz  modality.nii.gz  modality.npy  snr.npy  snr_subjects.npy
                 signal_r.npy  driven.npy  signal.npy  drive.npy  voxel_params.npz
                 truth.json
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cinebrain.errors import InputError
from cinebrain.metrics import pearson_r

__all__ = ["simulate_study", "truth_modality_file", "MODALITIES", "REGIONS"]

#: Codes used in ``modality.nii.gz`` / ``modality.npy``.
MODALITIES: dict[int, str] = {0: "none", 1: "visual", 2: "auditory", 3: "language"}



def truth_modality_file(study_root: str | Path) -> Path | None:
    """The ground-truth modality map of a simulated study in ``study_root`` (codes
    :data:`MODALITIES`, on the study's grid), or None for a study that is not simulated."""
    path = Path(study_root) / "ground_truth" / "modality.nii.gz"
    return path if path.is_file() else None


#: Driven regions: MNI spheres (centre mm, radius mm) or the occipital slab.
REGIONS: dict[str, dict[str, Any]] = {
    "visual": {"modality": 1, "kind": "slab", "y_max": -70.0, "z_min": -8.0},
    "auditory_left": {
        "modality": 2,
        "kind": "sphere",
        "centre": (-58.0, -22.0, 6.0),
        "radius": 15.0,
    },
    "auditory_right": {
        "modality": 2,
        "kind": "sphere",
        "centre": (58.0, -22.0, 6.0),
        "radius": 15.0,
    },
    "language_ifg": {
        "modality": 3,
        "kind": "sphere",
        "centre": (-48.0, 18.0, 12.0),
        "radius": 12.0,
    },
    "language_pt": {
        "modality": 3,
        "kind": "sphere",
        "centre": (-52.0, -52.0, 18.0),
        "radius": 12.0,
    },
    "language_atl": {
        "modality": 3,
        "kind": "sphere",
        "centre": (-56.0, -6.0, -18.0),
        "radius": 12.0,
    },
}

SR = 16000  # soundtrack sample rate (Hz)
N_MELS = 64  # mel bands of the auditory ground truth
BIN_S = 0.25  # feature bin (s) before TR resampling
GRID_W = 32  # columns of the downsampled grayscale frame of the visual ground truth
BASELINE = 1000.0

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


def _mel_space(audio: np.ndarray) -> Any:
    """Log-mel energy (dB) of the soundtrack averaged in ``BIN_S`` bins."""
    import librosa

    from cinebrain.features.base import FeatureSpace

    hop = SR // 100
    mel = librosa.feature.melspectrogram(
        y=audio, sr=SR, n_fft=400, hop_length=hop, n_mels=N_MELS, center=False, power=2.0
    )
    logmel = 10.0 * np.log10(mel.T + 1e-10)
    per = int(round(BIN_S * SR / hop))
    n_bins = logmel.shape[0] // per
    binned = logmel[: n_bins * per].reshape(n_bins, per, N_MELS).mean(axis=1)
    onsets = np.arange(n_bins) * BIN_S
    return FeatureSpace("truth_logmel", binned, onsets, BIN_S, method="mean")


# --------------------------------------------------------------------------------------
# brain
# --------------------------------------------------------------------------------------


def _brain_mask(voxel_size: float) -> Any:
    """nilearn's MNI152 brain mask resampled (nearest) to ``voxel_size`` mm."""
    import nibabel as nib
    from nilearn import datasets, image

    mni = datasets.load_mni152_brain_mask(resolution=2)
    affine = np.diag([float(voxel_size)] * 3 + [1.0])
    affine[:3, 3] = mni.affine[:3, 3]
    shape = tuple(
        int(math.ceil(s * abs(mni.affine[i, i]) / voxel_size)) for i, s in enumerate(mni.shape)
    )
    res = image.resample_img(
        mni,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    data = (np.asarray(res.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(data, affine)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian random field smoothed with ``sigma`` voxels."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="nearest")
    return ((f - f.mean()) / (f.std() + 1e-12)).astype(np.float32)


def _rank01(x: np.ndarray) -> np.ndarray:
    if x.size <= 1:
        return np.full(x.shape, 0.5)
    return np.argsort(np.argsort(x)) / (x.size - 1)


def _zscore(x: np.ndarray, axis: int = 0) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sd = x.std(axis=axis, keepdims=True)
    return (x - x.mean(axis=axis, keepdims=True)) / np.where(sd > 0, sd, 1.0)


@dataclass
class _Design:
    tr: float
    n_runs: int
    run_duration: float
    fixation: float
    n_trs: int

    def segment(self, r: int) -> tuple[float, float]:
        return (r * self.run_duration, (r + 1) * self.run_duration)


def _run_features(fs: Any, design: _Design) -> np.ndarray:
    """``fs`` on each run's TR grid, stacked: ``(n_runs * n_trs, n_features)``."""
    from cinebrain.timing import resample

    return np.concatenate(
        [
            np.asarray(
                resample(
                    fs, design.tr, design.n_trs, offset=design.fixation, segment=design.segment(r)
                ),
                np.float64,
            )
            for r in range(design.n_runs)
        ]
    )


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header.set_zooms(tuple(abs(float(affine[i, i])) for i in range(3)) + (float(tr),))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _write_study_yaml(study: dict, path: Path) -> None:
    """Write the study file via ``cinebrain.io.study`` (or plain YAML if it is missing)."""
    try:
        from cinebrain.io.study import Study, write_study
    except ImportError:
        import yaml

        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return
    write_study(Study.model_validate(study), path)


# --------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------


def simulate_study(
    out_dir: str | os.PathLike,
    n_subjects: int = 3,
    n_runs: int = 3,
    run_duration: float = 200.0,
    tr: float = 1.5,
    fps: int = 24,
    size: tuple[int, int] = (320, 180),
    voxel_size: float = 4,
    seed: int = 0,
    snr: tuple[float, float] = (0.3, 1.5),
    progress: bool = True,
    fixation: float = 6.0,
    tail: float = 10.0,
    overwrite: bool = False,
) -> Path:
    """Simulate a naturalistic-viewing fMRI study with known ground truth.

    Parameters
    ----------
    out_dir : path
        Folder to create. It must not exist unless ``overwrite`` (then it is replaced
        only once the new simulation is complete).
    n_subjects, n_runs : int
        Subjects (``sub-01``...) and runs per subject (``run-1``...). Every subject sees
        the whole movie, one segment of ``run_duration`` seconds per run.
    run_duration : float
        Seconds of movie per run; the movie lasts ``n_runs * run_duration``.
    tr : float
        Repetition time (s).
    fps, size : int, (width, height)
        Frame rate and frame size of ``stimulus/movie.mp4``.
    voxel_size : float
        Isotropic voxel size (mm) of the MNI grid of the BOLD images.
    seed : int
        Everything is a deterministic function of the seed (and the other arguments).
    snr : (low, high)
        Range of the true per-voxel SNR (std of the stimulus-driven signal / std of the
        noise) of driven voxels, before each subject's SNR factor (0.8-1.2).
    progress : bool
        Show progress bars (tqdm).
    fixation, tail : float
        Seconds scanned before the movie segment starts (the run's ``offset``) and after
        it ends; ``n_trs = ceil((fixation + run_duration + tail) / tr)``.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    Path
        ``out_dir / "study.yaml"``.
    """
    out_dir = Path(out_dir)
    width, height = int(size[0]), int(size[1])
    if n_subjects < 1 or n_runs < 1:
        raise InputError(
            "simulate_study", "n_subjects and n_runs must be >= 1", "pass positive counts"
        )
    if run_duration <= 0 or tr <= 0 or fps <= 0 or voxel_size <= 0:
        raise InputError(
            "simulate_study",
            "run_duration, tr, fps and voxel_size must be > 0",
            "pass positive values",
        )
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise InputError(
            "simulate_study", f"size {size} must be even and at least 16x16", "pass e.g. (320, 180)"
        )
    if not 0 < snr[0] <= snr[1]:
        raise InputError(
            "simulate_study",
            f"snr range {snr} must satisfy 0 < low <= high",
            "pass e.g. (0.3, 1.5)",
        )
    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "already exists", "choose a new folder or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _simulate_into(
            tmp,
            n_subjects,
            n_runs,
            float(run_duration),
            float(tr),
            float(fps),
            (width, height),
            float(voxel_size),
            int(seed),
            (float(snr[0]), float(snr[1])),
            progress,
            float(fixation),
            float(tail),
        )
        os.chmod(tmp, 0o777 & ~_umask())
        if out_dir.exists():
            trash = Path(
                tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent)
            )
            os.replace(out_dir, trash / "old")
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "study.yaml"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _simulate_into(
    root: Path,
    n_subjects: int,
    n_runs: int,
    run_duration: float,
    tr: float,
    fps: float,
    size: tuple[int, int],
    voxel_size: float,
    seed: int,
    snr: tuple[float, float],
    progress: bool,
    fixation: float,
    tail: float,
) -> None:
    import pandas as pd
    from tqdm.auto import tqdm

    from cinebrain.features.base import FeatureSpace
    from cinebrain.features.text_model import embed_texts
    from cinebrain.io.video import write_video
    from cinebrain.timing import convolve_hrf

    width, height = size
    ss = np.random.SeedSequence(seed)
    rng_movie, rng_audio, rng_brain, ss_subjects = _streams(ss)
    total = n_runs * run_duration
    n_frames = int(round(total * fps))
    design = _Design(
        tr,
        n_runs,
        run_duration,
        fixation,
        int(math.ceil((fixation + run_duration + tail) / tr - 1e-9)),
    )

    # ---- stimulus ---------------------------------------------------------------------
    scenes = _make_scenes(rng_movie, total, size)
    for s in scenes:
        s.words = _words_for(s)
    stim = root / "stimulus"
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

    # ---- brain and regions ----------------------------------------------------------
    mask_img = _brain_mask(voxel_size)
    affine = mask_img.affine
    mask = np.asarray(mask_img.dataobj).astype(bool)
    ijk = np.argwhere(mask)  # C order == boolean-indexing order
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    n_vox = len(ijk)
    modality = np.zeros(n_vox, np.uint8)
    region_of = np.full(n_vox, -1, np.int64)
    centre_dist = np.zeros(n_vox)
    region_names = list(REGIONS)
    for ri, reg in enumerate(REGIONS.values()):
        if reg["kind"] == "slab":
            sel = (xyz[:, 1] < reg["y_max"]) & (xyz[:, 2] > reg["z_min"])
            d = np.zeros(n_vox)
        else:
            d = np.linalg.norm(xyz - np.array(reg["centre"]), axis=1) / reg["radius"]
            sel = d <= 1.0
        sel &= modality == 0
        modality[sel] = reg["modality"]
        region_of[sel] = ri
        centre_dist[sel] = d[sel]
    driven = np.flatnonzero(modality > 0)
    if not all((modality == m).any() for m in (1, 2, 3)):
        raise InputError(
            "simulate_study",
            f"voxel_size {voxel_size} mm leaves a driven region empty",
            "use voxel_size <= 8",
        )

    # true SNR: smooth random field, higher near sphere centres
    field3 = _smooth_field(rng_brain, mask.shape, 1.5)[mask]
    snr_base = np.zeros(n_vox, np.float32)
    for ri in range(len(region_names)):
        sel = region_of == ri
        if not sel.any():
            continue
        u = _rank01(field3[sel])
        if REGIONS[region_names[ri]]["kind"] == "sphere":
            u = 0.5 * u + 0.5 * (1.0 - centre_dist[sel])
        snr_base[sel] = snr[0] + (snr[1] - snr[0]) * u

    # ---- voxel drives ------------------------------------------------------------------
    lum_fs, mot_fs = acc.spaces()
    del acc
    block = max(1, width // GRID_W)
    gw, gh = width // block, height // block
    drive = np.zeros((n_runs * design.n_trs, len(driven)))
    params: dict[str, np.ndarray] = {}

    vis = np.flatnonzero(modality[driven] == 1)
    vx = xyz[driven[vis]]
    ecc = np.clip((vx[:, 1] + 105.0) / 40.0, 0.1, 1.0)
    jitter = rng_brain.normal(0, 0.03, (len(vis), 2))
    rf_x = np.clip(0.5 + ecc * (-0.45 * np.clip(vx[:, 0] / 40.0, -1, 1)) + jitter[:, 0], 0.02, 0.98)
    rf_y = np.clip(
        0.5 + ecc * (0.4 * np.clip((vx[:, 2] - 10.0) / 20.0, -1, 1)) + jitter[:, 1], 0.02, 0.98
    )
    rf_sigma = 0.05 + 0.12 * ecc
    w_lum = rng_brain.uniform(0.3, 1.0, len(vis))
    gx = (np.arange(gw) + 0.5) / gw
    gy = (np.arange(gh) + 0.5) / gh
    dx = gx[None, None, :] - rf_x[:, None, None]
    dy = (gy[None, :, None] - rf_y[:, None, None]) * (gh / gw)
    rf = np.exp(-0.5 * (dx**2 + dy**2) / rf_sigma[:, None, None] ** 2).reshape(len(vis), -1)
    rf /= rf.sum(axis=1, keepdims=True)
    lum = _run_features(lum_fs, design) @ rf.T
    mot = _run_features(mot_fs, design) @ rf.T
    drive[:, vis] = w_lum * _zscore(lum) + (1.0 - w_lum) * _zscore(mot)
    params.update(
        visual_rf_x=rf_x, visual_rf_y=rf_y, visual_rf_sigma=rf_sigma, visual_w_luminance=w_lum
    )

    aud = np.flatnonzero(modality[driven] == 2)
    ay = xyz[driven[aud], 1]
    pref = np.clip(
        4.0 + (N_MELS - 10.0) * _rank01(ay + rng_brain.normal(0, 3.0, len(aud))), 2, N_MELS - 3
    )
    bands = np.arange(N_MELS)
    tuning = np.exp(-0.5 * ((bands[None, :] - pref[:, None]) / 3.0) ** 2)
    tuning /= tuning.sum(axis=1, keepdims=True)
    mel_fs = _mel_space(audio)
    del audio
    drive[:, aud] = _zscore(_run_features(mel_fs, design) @ tuning.T)
    params.update(auditory_preferred_mel=pref)

    lang = np.flatnonzero(modality[driven] == 3)
    emb = embed_texts([s.description for s in scenes]).astype(np.float64)
    text_fs = FeatureSpace(
        "truth_text",
        emb,
        [s.onset for s in scenes],
        [s.offset - s.onset for s in scenes],
        method="overlap",
    )
    centred = emb - emb.mean(axis=0)
    k = int(max(1, min(6, len(scenes) - 1)))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = vt[:k] if len(scenes) > 1 else rng_brain.standard_normal((1, emb.shape[1]))
    text_w = np.zeros((len(lang), emb.shape[1]))
    for ri, name in enumerate(region_names):
        if REGIONS[name]["modality"] != 3:
            continue
        sel = region_of[driven[lang]] == ri
        if not sel.any():
            continue
        mix = rng_brain.standard_normal((2, k))
        d1, d2 = mix @ pcs
        rel = (xyz[driven[lang][sel]] - np.array(REGIONS[name]["centre"])) / REGIONS[name]["radius"]
        theta = np.pi / 2 * (rel @ rng_brain.standard_normal(3)) / math.sqrt(3)
        text_w[sel] = np.cos(theta)[:, None] * d1 + np.sin(theta)[:, None] * d2
    text_w += 0.1 * rng_brain.standard_normal(text_w.shape) / math.sqrt(emb.shape[1])
    drive[:, lang] = _zscore(_run_features(text_fs, design) @ text_w.T)
    params.update(language_text_weights=text_w.astype(np.float32))

    drive = _zscore(drive)
    lengths = [design.n_trs] * n_runs
    signal = _zscore(
        np.asarray(
            convolve_hrf(drive.astype(np.float32), tr, run_lengths=lengths, model="spm"), np.float64
        )
    )

    # ---- subjects ------------------------------------------------------------------------
    subject_factor = np.array(
        [np.random.default_rng(s).uniform(0.8, 1.2) for s in ss_subjects(n_subjects)]
    )
    snr_subjects = (snr_base[None, :] * subject_factor[:, None]).astype(np.float32)
    signal_r = np.zeros((n_subjects, n_vox), np.float32)
    study_subjects: dict[str, Any] = {}
    t_run = np.arange(design.n_trs) * tr
    for si, sub_ss in enumerate(
        tqdm(ss_subjects(n_subjects), desc="simulate: BOLD", unit="subject", disable=not progress)
    ):
        rng = np.random.default_rng(sub_ss)
        rng.uniform()  # the subject factor's draw
        sub = f"sub-{si + 1:02d}"
        baseline = (BASELINE * (1.0 + 0.12 * _smooth_field(rng, mask.shape, 2.0)[mask])).clip(
            500, None
        )
        phys_maps = np.stack([_smooth_field(rng, mask.shape, 3.0)[mask] for _ in range(3)])
        noise = np.empty((n_runs, design.n_trs, n_vox), np.float32)
        phi = rng.uniform(0.3, 0.5, n_vox).astype(np.float32)
        for r in range(n_runs):
            e = rng.standard_normal((design.n_trs, n_vox)).astype(np.float32)
            ar = np.empty_like(e)
            ar[0] = e[0]
            innov = np.sqrt(1 - phi**2)
            for t in range(1, design.n_trs):
                ar[t] = phi * ar[t - 1] + innov * e[t]
            phys_t = np.zeros((design.n_trs, 3))
            pe = rng.standard_normal((design.n_trs, 3))
            for t in range(design.n_trs):
                phys_t[t] = (0.9 * phys_t[t - 1] if t else 0) + math.sqrt(1 - 0.81) * pe[t]
            T = design.n_trs * tr
            drift_basis = np.stack(
                [t_run / T - 0.5, np.cos(np.pi * t_run / T), np.cos(2 * np.pi * t_run / T)], axis=1
            )
            drift_w = rng.normal(0, 1.0, (3, n_vox)) * np.array([[1.0], [0.7], [0.4]])
            noise[r] = (
                0.8 * ar
                + 0.45 * (phys_t @ phys_maps).astype(np.float32)
                + 0.4 * (drift_basis @ drift_w).astype(np.float32)
            )
        noise -= noise.mean(axis=1, keepdims=True)
        noise /= noise.reshape(-1, n_vox).std(axis=0)[None, None, :]
        scale = 0.01 * baseline  # noise std = 1 % of the baseline
        eff = np.zeros(n_vox)
        eff[driven] = snr_subjects[si, driven]
        runs = []
        responses = []
        for r in range(n_runs):
            y = noise[r].astype(np.float64)
            y[:, driven] += eff[driven] * signal[r * design.n_trs : (r + 1) * design.n_trs]
            bold = baseline[None, :] + scale[None, :] * y
            # a 1/16 grid keeps gzip effective; the error is < 1 % of the noise std
            bold = (np.round(bold * 16.0) / 16.0).astype(np.float32)
            vol = np.zeros(mask.shape + (design.n_trs,), np.float32)
            vol[mask] = bold.T
            rel = Path(sub) / "func" / f"{sub}_run-{r + 1}_bold.nii.gz"
            _write_nifti(root / rel, vol, affine, tr=tr)
            responses.append(_zscore(bold[:, driven]))
            runs.append(
                {
                    "name": f"run-{r + 1}",
                    "bold": rel.as_posix(),
                    "segment": [float(design.segment(r)[0]), float(design.segment(r)[1])],
                    "offset": float(fixation),
                }
            )
        signal_r[si, driven] = pearson_r(signal, np.concatenate(responses))
        study_subjects[sub] = {"runs": runs}
        del noise

    # ---- ground truth -------------------------------------------------------------------
    gt = root / "ground_truth"
    gt.mkdir()
    _write_nifti(gt / "mask.nii.gz", mask.astype(np.uint8), affine)
    mod_vol = np.zeros(mask.shape, np.uint8)
    mod_vol[mask] = modality
    _write_nifti(gt / "modality.nii.gz", mod_vol, affine)
    np.save(gt / "modality.npy", modality)
    np.save(gt / "snr.npy", snr_base)
    np.save(gt / "snr_subjects.npy", snr_subjects)
    np.save(gt / "signal_r.npy", signal_r)
    np.save(gt / "driven.npy", driven.astype(np.int64))
    np.save(gt / "signal.npy", signal.astype(np.float32))
    np.save(gt / "drive.npy", drive.astype(np.float32))
    np.savez(gt / "voxel_params.npz", **params)

    study = {
        "name": "simulated",
        "tr": tr,
        "length_policy": "error",
        "stimulus": {
            "video": "stimulus/movie.mp4",
            "audio": None,
            "annotations": {
                "path": "stimulus/annotations.tsv",
                "onset": "onset",
                "offset": "offset",
                "unit": "s",
                "text": ["description"],
                "categorical": ["location"],
                "numeric": ["n_objects", "indoor", "music"],
            },
            "transcript": "stimulus/transcript.tsv",
        },
        "mask": "ground_truth/mask.nii.gz",
        "subjects": study_subjects,
    }
    truth = {
        "seed": seed,
        "parameters": {
            "n_subjects": n_subjects,
            "n_runs": n_runs,
            "run_duration": run_duration,
            "tr": tr,
            "fps": fps,
            "size": [width, height],
            "voxel_size": voxel_size,
            "snr": list(snr),
            "fixation": fixation,
            "tail": tail,
            "n_trs": design.n_trs,
            "sr": SR,
        },
        "modalities": {str(k): v for k, v in MODALITIES.items()},
        "regions": {
            name: {
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in reg.items()},
                "n_voxels": int((region_of == ri).sum()),
            }
            for ri, (name, reg) in enumerate(REGIONS.items())
        },
        "counts": {
            "n_voxels": n_vox,
            "n_driven": len(driven),
            **{MODALITIES[m]: int((modality == m).sum()) for m in (1, 2, 3)},
        },
        "n_scenes": len(scenes),
        "subject_snr_factor": subject_factor.tolist(),
        "mean_signal_r": {
            MODALITIES[m]: [float(signal_r[s, modality == m].mean()) for s in range(n_subjects)]
            for m in (1, 2, 3)
        },
        "run_lengths": lengths,
        "timing": "volume k covers scan time [k*tr, (k+1)*tr); stimulus time s of run r is at "
        "scan time fixation + (s - r*run_duration)",
        "features": {
            "visual": f"grayscale frame block-averaged to {gw}x{gh} (luminance) and |frame difference| "
            "(motion), Gaussian receptive field (visual_rf_* in voxel_params.npz, in frame-width "
            "units), mixed w_luminance*z(lum) + (1-w_luminance)*z(motion)",
            "auditory": f"log-mel (10*log10 power, {N_MELS} mels, 25 ms window, 10 ms hop) weighted "
            "by a Gaussian tuning (sd 3 bands) around auditory_preferred_mel",
            "language": "MiniLM sentence embedding of the annotation description (overlap "
            "resampling) projected on language_text_weights",
            "hrf": "cinebrain.timing.convolve_hrf(model='spm'), causal, per run; then z-scored",
            "noise": "AR(1) (phi 0.3-0.5) + 3 smooth physiological components (AR 0.9) + drift "
            "(linear + 2 cosines), per-run demeaned, unit std per voxel; BOLD = baseline + "
            "0.01*baseline*(snr_subject*signal + noise)",
        },
        "files": {
            "modality.npy": "(n_voxels,) uint8 code per masked voxel (C order of mask.nii.gz)",
            "snr.npy": "(n_voxels,) true signal/noise std before the subject factor (0 = not driven)",
            "snr_subjects.npy": "(n_subjects, n_voxels) true SNR per subject",
            "signal_r.npy": "(n_subjects, n_voxels) r between the clean signal and the BOLD "
            "(each run z-scored, runs concatenated): the ceiling for a perfect model",
            "driven.npy": "(n_driven,) indices of driven voxels among masked voxels",
            "signal.npy": "(n_runs*n_trs, n_driven) clean z-scored signal (shared by subjects)",
            "drive.npy": "(n_runs*n_trs, n_driven) the signal before the HRF (z-scored)",
            "voxel_params.npz": "receptive fields, preferred mel band, text weights",
        },
    }
    _write_study_yaml(study, root / "study.yaml")
    # truth.json last: its presence marks a complete simulation
    from cinebrain._files import write_json

    write_json(gt / "truth.json", truth)
    for p in root.rglob("*"):  # temp-file writers create 0600 files
        if p.is_file():
            os.chmod(p, 0o666 & ~_umask())


def _streams(ss: np.random.SeedSequence) -> tuple[Any, ...]:
    """Independent generators: movie, audio, brain, and a per-subject seed factory."""
    movie, audio, brain, subjects = ss.spawn(4)

    def subject_seeds(n: int) -> list[np.random.SeedSequence]:
        return list(np.random.SeedSequence(subjects.entropy, spawn_key=subjects.spawn_key).spawn(n))

    return (
        np.random.default_rng(movie),
        np.random.default_rng(audio),
        np.random.default_rng(brain),
        subject_seeds,
    )
