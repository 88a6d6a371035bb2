"""A simulated mouse V1 study during natural-like movies, with known ground truth.

:func:`simulate_neuron_study` returns :class:`~cinebrain.io.neurons.NeuronSession` objects
and a truth dictionary; :func:`write_neuron_study` writes each session as a Sensorium 2023
folder (:func:`cinebrain.io.neurons.write_sensorium`) plus ``truth.npz`` and ``truth.json``.

**Movie** (shared by all sessions, as Sensorium's clips are shared by its mice): 36 x 64
grey frames at 30 Hz. Each clip is a sequence of scenes cut every 1-3 s; a scene is a
1/f-amplitude-spectrum texture (random Fourier phases) drifting at a constant random
velocity (a Fourier phase ramp per frame), with a random mean luminance and contrast, and
0-3 dark or bright discs moving across it in straight lines. Grey levels lie in [0, 255].
Clips: ``n_train`` training clips of 150-300 frames, ``n_validation`` validation clips and
``n_test`` test clips shown ``n_repeats`` times each (with different behaviour).

**Neurons** (per session): linear-nonlinear V1 models. Screen coordinates are normalised,
``x = (col + .5) / 64 * 2 - 1`` (left to right) and ``y = (row + .5) / 36 * 2 - 1`` (top
to bottom). Each neuron has a Gabor receptive field centred at ``(x, y)`` with envelope
width ``sigma``, orientation ``orientation`` (radians), spatial frequency ``frequency``
(cycles per x unit) and ``phase``; sizes and frequencies are in x units (1 x unit = 32
pixels) on both axes, so fields are round on the screen. Filters are zero-mean and unit
norm. A *simple* cell's drive is its filter's output, a *complex* cell's the energy
``sqrt(even**2 + odd**2)`` of a quadrature pair, each output first filtered in time by the
neuron's causal biphasic kernel (``temporal_kernel[tau]`` weights frame ``t - tau``,
``tau = 0..K-1``: frames after t never count). The drive is standardised with fixed
per-neuron constants (``drive_mean``, ``drive_std``, measured once on the training clips)
to ``z``, and the noiseless rate in spikes per frame is::

    rate = rate_scale * softplus(slope * z + offset) * gain
    gain = exp(running_gain * running / 10 + pupil_gain * (pupil - 20) / 5)

``running_gain = pupil_gain = 0`` for about 30% of neurons (unmodulated). The eyes move
the fields: at frame t a field sits ``eye_gain * (pupil_center[t] - eye_centre)`` pixels
away from its resting place (the retinal image is shifted by a sub-pixel Fourier shift).
Responses are Poisson counts of ``rate`` per frame, or with ``response="calcium"`` those
spikes through a causal exponential decay (``calcium_tau`` s) plus Gaussian noise,
clipped at 0 (non-negative, like deconvolved activity).

**Behaviour** per trial, columns ``pupil_dilation, running_speed`` (Sensorium's order):
running speed in smooth non-negative bouts (cm/s), pupil size slow and correlated with
running, and the eye position (``pupil_center``, camera pixels) a slow drift with saccade
jumps.

Everything is a deterministic function of the seed and the arguments.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from scipy.signal import lfilter

from cinebrain._files import atomic_folder
from cinebrain.errors import InputError
from cinebrain.io.neurons import NeuronSession, write_sensorium

FRAME_SHAPE = (36, 64)
FRAME_RATE = 30.0
BEHAVIOR_NAMES = ["pupil_dilation", "running_speed"]
RUNNING_SCALE = 10.0  # cm/s: gain = exp(running_gain * running / RUNNING_SCALE + ...)
PUPIL_MEAN, PUPIL_SCALE = 20.0, 5.0  # pupil term: pupil_gain * (pupil - PUPIL_MEAN) / PUPIL_SCALE
KERNEL_FRAMES = 10  # temporal kernel length (frames), 333 ms at 30 Hz
_NWB_START = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)

__all__ = ["NeuronParams", "simulate_movie", "noiseless_rates", "simulate_neuron_study",
           "write_neuron_study", "screen_coordinates"]


# --------------------------------------------------------------------------- movie
def screen_coordinates(shape: tuple[int, int] = FRAME_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of every pixel centre, each ``(H, W)``, normalised to [-1, 1]."""
    h, w = shape
    x = (np.arange(w) + 0.5) / w * 2 - 1
    y = (np.arange(h) + 0.5) / h * 2 - 1
    return np.meshgrid(x, y)


def _texture_spectrum(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 coefficients of a unit-variance texture with a 1/f amplitude spectrum."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    amp = 1.0 / np.maximum(f, 1.0 / max(h, w))
    amp[0, 0] = 0.0
    coef = amp * np.exp(2j * np.pi * rng.random((h, w // 2 + 1)))
    img = np.fft.irfft2(coef, s=shape)
    return coef / img.std()


def simulate_movie(rng: np.random.Generator, n_frames: int,
                   shape: tuple[int, int] = FRAME_SHAPE) -> tuple[np.ndarray, list[int]]:
    """One clip: ``(n_frames, H, W)`` float32 grey levels in [0, 255] and its scene cuts.

    Scenes of 30-90 frames: a drifting 1/f texture (random velocity up to 1 pixel per
    frame on each axis, mean 90-170, contrast 25-55 grey levels) and 0-3 moving discs
    (radius 3-8 pixels, dark 0-40 or bright 215-255, up to 2 pixels per frame).
    """
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n_frames, h, w), dtype=np.float32)
    cuts, start = [], 0
    while start < n_frames:
        cuts.append(start)
        n = min(int(rng.integers(30, 91)), n_frames - start)
        coef = _texture_spectrum(rng, shape)
        vy, vx = rng.uniform(-1.0, 1.0, 2)
        t = np.arange(n)[:, None, None]
        # the texture moves by (vx, vy) pixels per frame: a phase ramp per frame
        ramp = np.exp(-2j * np.pi * (fx * vx + fy * vy) * t)
        scene = np.fft.irfft2(coef[None] * ramp, s=shape, axes=(1, 2))
        scene = rng.uniform(90, 170) + rng.uniform(25, 55) * scene
        for _ in range(int(rng.integers(0, 4))):
            radius = rng.uniform(3, 8)
            level = rng.uniform(0, 40) if rng.random() < 0.5 else rng.uniform(215, 255)
            r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
            dr, dc = rng.uniform(-2, 2, 2)
            rr = r0 + dr * t[:, 0, 0]
            cc = c0 + dc * t[:, 0, 0]
            dist = np.sqrt((rows[None] - rr[:, None, None]) ** 2
                           + (cols[None] - cc[:, None, None]) ** 2)
            alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0)  # a one-pixel soft edge
            scene = scene * (1 - alpha) + level * alpha
        frames[start:start + n] = np.clip(scene, 0, 255)
        start += n
    return frames, cuts


# --------------------------------------------------------------------------- neurons
@dataclass
class NeuronParams:
    """Ground truth of a session's neurons, one entry per neuron (arrays of length N).

    ``kind`` is ``"simple"`` or ``"complex"``; ``temporal_kernel`` is ``(N, K)``;
    ``eye_gain`` (pixels per camera pixel) and ``eye_centre`` (2,) are shared by the
    session. Units and formulas: the module docstring.
    """

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    orientation: np.ndarray
    frequency: np.ndarray
    phase: np.ndarray
    kind: np.ndarray
    temporal_kernel: np.ndarray
    slope: np.ndarray
    offset: np.ndarray
    rate_scale: np.ndarray
    running_gain: np.ndarray
    pupil_gain: np.ndarray
    drive_mean: np.ndarray
    drive_std: np.ndarray
    eye_gain: float
    eye_centre: np.ndarray

    @property
    def n_neurons(self) -> int:
        return len(self.x)

    @property
    def modulated(self) -> np.ndarray:
        return (self.running_gain != 0) | (self.pupil_gain != 0)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    def filters(self, shape: tuple[int, int] = FRAME_SHAPE) -> tuple[np.ndarray, np.ndarray]:
        """Even and odd (quadrature) spatial filters, each ``(N, H * W)`` float32,
        zero-mean and unit-norm."""
        xs, ys = screen_coordinates(shape)
        h, w = shape
        u = xs[None] - self.x[:, None, None]
        v = (ys[None] - self.y[:, None, None]) * (h / w)  # y in x units: round fields
        env = np.exp(-(u**2 + v**2) / (2 * self.sigma[:, None, None] ** 2))
        env[env < 1e-6] = 0.0  # beyond ~5 sigma; also keeps float32 denormals (slow) out
        th = self.orientation[:, None, None]
        arg = 2 * np.pi * self.frequency[:, None, None] * (u * np.cos(th) + v * np.sin(th))
        out = []
        for carrier in (np.cos(arg + self.phase[:, None, None]),
                        np.sin(arg + self.phase[:, None, None])):
            g = env * carrier
            g = g - env * (g.sum(axis=(1, 2), keepdims=True) / env.sum(axis=(1, 2), keepdims=True))
            g = g / np.linalg.norm(g, axis=(1, 2), keepdims=True)
            out.append(g.reshape(len(self.x), h * w).astype(np.float32))
        return out[0], out[1]


def _temporal_kernels(rng: np.random.Generator, n: int, k: int = KERNEL_FRAMES) -> np.ndarray:
    """``(n, k)`` causal biphasic kernels (a fast positive lobe, a slower negative one),
    unit norm; entry tau weights the frame tau frames back."""
    tau = np.arange(k, dtype=np.float64)[None]
    t1 = rng.uniform(0.8, 1.4, (n, 1))
    t2 = t1 * rng.uniform(1.8, 2.4, (n, 1))
    c = rng.uniform(0.3, 0.7, (n, 1))
    g1 = (tau / t1) ** 2 * np.exp(-tau / t1)
    g2 = (tau / t2) ** 2 * np.exp(-tau / t2)
    kern = g1 / g1.sum(axis=1, keepdims=True) - c * g2 / g2.sum(axis=1, keepdims=True)
    return (kern / np.linalg.norm(kern, axis=1, keepdims=True)).astype(np.float32)


def _draw_neurons(rng: np.random.Generator, n: int, complex_fraction: float,
                  unmodulated_fraction: float, eye_gain: float) -> NeuronParams:
    kind = np.where(rng.random(n) < complex_fraction, "complex", "simple")
    modulated = rng.random(n) >= unmodulated_fraction
    sigma = rng.uniform(0.07, 0.13, n)
    return NeuronParams(
        x=rng.uniform(-0.7, 0.7, n),
        y=rng.uniform(-0.6, 0.6, n),
        sigma=sigma,
        orientation=rng.uniform(0, np.pi, n),
        frequency=rng.uniform(0.35, 0.6, n) / sigma,
        phase=rng.uniform(0, 2 * np.pi, n),
        kind=kind,
        temporal_kernel=_temporal_kernels(rng, n),
        slope=rng.uniform(1.0, 1.8, n),
        offset=rng.uniform(-1.5, -0.5, n),
        rate_scale=rng.uniform(0.3, 0.8, n),
        running_gain=np.where(modulated, rng.uniform(0.15, 0.35, n), 0.0),
        pupil_gain=np.where(modulated, rng.uniform(0.05, 0.25, n), 0.0),
        drive_mean=np.zeros(n),
        drive_std=np.ones(n),
        eye_gain=float(eye_gain),
        eye_centre=rng.uniform([140.0, 90.0], [180.0, 120.0]),
    )


def _retinal_frames(params: NeuronParams, video: np.ndarray, pupil_center) -> np.ndarray:
    """Frames minus mid-grey, shifted so that a fixed filter sees what the eye-moved field
    sees: the image sampled at ``x + shift_t`` (sub-pixel Fourier shift)."""
    v = np.asarray(video, dtype=np.float32) - np.float32(128.0)
    if params.eye_gain == 0 or pupil_center is None:
        return v
    shift = params.eye_gain * (np.asarray(pupil_center, np.float64) - params.eye_centre)  # (T, 2) px
    h, w = v.shape[1:]
    fy = np.fft.fftfreq(h)[None, :, None]
    fx = np.fft.rfftfreq(w)[None, None, :]
    ramp = np.exp(2j * np.pi * (fx * shift[:, 0, None, None] + fy * shift[:, 1, None, None]))
    return scipy.fft.irfft2(scipy.fft.rfft2(v) * ramp.astype(np.complex64), s=(h, w)).astype(
        np.float32, copy=False)


def _causal_filter(s: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """``(T, N)`` signals through each neuron's ``(N, K)`` kernel: frames <= t only."""
    out = np.zeros_like(s)
    t = s.shape[0]
    for tau in range(min(kernels.shape[1], t)):
        out[tau:] += kernels[:, tau] * s[: t - tau]
    return out


def _drives(params: NeuronParams, videos, pupil_centers, filters) -> list[np.ndarray]:
    """Raw (unstandardised) drive ``(T_i, N)`` of each trial (one matrix product for all)."""
    frames = [_retinal_frames(params, v, p) for v, p in zip(videos, pupil_centers, strict=True)]
    flat = np.concatenate([f.reshape(len(f), -1) for f in frames])
    n = params.n_neurons
    both = flat @ np.concatenate(filters).T  # (sum T, 2N): even then odd outputs
    out = []
    for part in np.split(both, np.cumsum([len(f) for f in frames])[:-1]):
        even = _causal_filter(part[:, :n], params.temporal_kernel)
        odd = _causal_filter(part[:, n:], params.temporal_kernel)
        out.append(np.where(params.kind == "complex", np.sqrt(even**2 + odd**2), even))
    return out


def behaviour_gain(params: NeuronParams, behavior) -> np.ndarray:
    """``(T, N)`` multiplicative gain from behaviour ``(T, 2)`` (pupil, running)."""
    b = np.asarray(behavior, dtype=np.float64)
    pupil, running = b[:, 0:1], b[:, 1:2]
    return np.exp(params.running_gain * running / RUNNING_SCALE
                  + params.pupil_gain * (pupil - PUPIL_MEAN) / PUPIL_SCALE)


def noiseless_rates(params: NeuronParams, video, behavior, pupil_center=None,
                    filters: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Noiseless rate ``(T, N)`` in spikes per frame of one trial.

    ``video`` ``(T, H, W)`` grey levels, ``behavior`` ``(T, 2)`` (pupil dilation, running
    speed), ``pupil_center`` ``(T, 2)`` or None (no eye movement). Causal: row t depends on
    frames ``<= t`` and on behaviour and eye position at t only.
    """
    if filters is None:
        filters = params.filters(np.asarray(video).shape[1:])
    drive = _drives(params, [video], [pupil_center], filters)[0]
    z = (drive - params.drive_mean) / params.drive_std
    return (params.rate_scale * np.logaddexp(0.0, params.slope * z + params.offset)
            * behaviour_gain(params, behavior)).astype(np.float32)


# --------------------------------------------------------------------------- behaviour
def _smooth(rng: np.random.Generator, n: int, frames: float) -> np.ndarray:
    """Unit-variance low-pass noise with a time constant of ``frames`` (AR(1), causal)."""
    a = np.exp(-1.0 / frames)
    x = lfilter([np.sqrt(1 - a**2)], [1, -a], rng.standard_normal(n + int(5 * frames)))
    return x[int(5 * frames):]


def simulate_behaviour(rng: np.random.Generator, n: int, eye_centre) -> tuple[np.ndarray, np.ndarray]:
    """``behavior`` ``(n, 2)`` (pupil dilation, running speed cm/s) and ``pupil_center``
    ``(n, 2)`` camera pixels for one trial of ``n`` frames."""
    # running: a two-state (still / running) Markov chain, bouts of about 1-3 s
    state = np.empty(n, dtype=bool)
    state[0] = rng.random() < 0.4
    p_switch = np.where(state[0], 1 / 60, 1 / 75)
    for i in range(1, n):
        state[i] = (not state[i - 1]) if rng.random() < p_switch else state[i - 1]
        p_switch = 1 / 60 if state[i] else 1 / 75
    speed = rng.uniform(8, 30)
    target = state * speed * (1 + 0.2 * _smooth(rng, n, 15))
    running = lfilter([1 - np.exp(-1 / 8)], [1, -np.exp(-1 / 8)], target)  # smooth onsets
    running = np.maximum(running + 0.3 * np.abs(_smooth(rng, n, 3)), 0.0)
    # pupil: slow, dilates with running
    pupil_drive = lfilter([1 - np.exp(-1 / 45)], [1, -np.exp(-1 / 45)], running)
    pupil = PUPIL_MEAN - 3.5 + 0.5 * pupil_drive + 1.5 * _smooth(rng, n, 60)
    # eye position: slow drift plus saccades (about one every 2 s)
    a = np.exp(-1 / 10)  # a second low-pass: a drift without frame-to-frame jitter
    drift = lfilter([1 - a], [1, -a], np.stack([_smooth(rng, n, 40), _smooth(rng, n, 40)], 1),
                    axis=0) * 3.0
    jumps = np.zeros((n, 2))
    events = rng.random(n) < 1 / 60
    jumps[events] = rng.normal(0, 4.0, (int(events.sum()), 2))
    eye = np.asarray(eye_centre)[None] + drift + np.cumsum(jumps, axis=0) * 0.6
    eye -= 0.6 * np.cumsum(jumps, axis=0).mean(axis=0)  # saccades wander about the centre
    behavior = np.stack([pupil, running], axis=1).astype(np.float32)
    return behavior, eye.astype(np.float32)


# --------------------------------------------------------------------------- the study
def _clip_library(rng: np.random.Generator, n_train: int, n_validation: int, n_test: int,
                  train_frames: tuple[int, int], test_frames: int, shape) -> list[dict]:
    clips = []
    for tier, count in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        for k in range(count):
            n = int(rng.integers(train_frames[0], train_frames[1] + 1)) if tier == "train" \
                else int(test_frames)
            frames, cuts = simulate_movie(rng, n, shape)
            clips.append({"id": f"{tier}-{k:03d}", "tier": tier, "frames": frames, "cuts": cuts})
    return clips


def simulate_neuron_study(
    seed: int = 0,
    n_sessions: int = 2,
    neurons: tuple[int, ...] | int = (60, 80),
    *,
    n_train: int = 24,
    n_validation: int = 4,
    n_test: int = 3,
    n_repeats: int = 10,
    train_frames: tuple[int, int] = (150, 300),
    test_frames: int = 150,
    frame_rate: float = FRAME_RATE,
    response: str = "spikes",
    calcium_tau: float = 0.5,
    calcium_noise: float = 0.1,
    complex_fraction: float = 0.35,
    unmodulated_fraction: float = 0.3,
    eye_gain: float = 0.3,
) -> tuple[list[NeuronSession], dict[str, Any]]:
    """Simulate ``n_sessions`` sessions of V1 neurons watching the same clips.

    Parameters
    ----------
    seed
        Everything is a deterministic function of the seed and the arguments.
    n_sessions, neurons
        Sessions (``mouse-01``...) and neurons per session (one count for all, or one
        per session).
    n_train, n_validation, n_test, n_repeats
        Clips per tier; each test clip is shown ``n_repeats`` times per session, each
        other clip once. Trial order is shuffled per session.
    train_frames, test_frames
        Frame counts: training clips draw theirs from the range, validation and test
        clips have ``test_frames``.
    response
        ``"spikes"`` (Poisson counts per frame) or ``"calcium"`` (the spikes through an
        exponential decay of ``calcium_tau`` seconds, plus Gaussian noise of
        ``calcium_noise`` times the trace's std, clipped at 0).
    complex_fraction, unmodulated_fraction
        Expected fractions of complex cells and of neurons without behaviour gain.
    eye_gain
        Pixels a receptive field moves per camera pixel of eye movement (0: none).

    Returns
    -------
    sessions, truth
        The sessions (validated), and the ground truth: ``truth["sessions"][name]`` holds
        ``"params"`` (:class:`NeuronParams`), ``"rate"`` (noiseless spikes per frame,
        one ``(T, N)`` per trial), ``"gain"`` (behaviour gain per trial) and ``"spikes"``;
        ``truth["clips"]`` each clip's tier, frames and scene cuts.
    """
    if n_sessions < 1:
        raise InputError("n_sessions", f"{n_sessions} sessions", "simulate at least one")
    counts = [int(neurons)] * n_sessions if np.isscalar(neurons) else [int(c) for c in neurons]
    if len(counts) != n_sessions or min(counts) < 1:
        raise InputError("neurons", f"{neurons!r} for {n_sessions} sessions",
                         "give one positive count, or one per session")
    if response not in ("spikes", "calcium"):
        raise InputError("response", f"{response!r} is not a response kind",
                         "use 'spikes' or 'calcium'")
    if n_train < 2 or n_test < 1 or n_repeats < 2 or n_validation < 0:
        raise InputError("n_train", "need >= 2 training clips and >= 1 test clip shown >= 2 times",
                         "raise n_train, n_test or n_repeats")
    if not 1 <= train_frames[0] <= train_frames[1] or test_frames < 1:
        raise InputError("train_frames", f"frame counts {train_frames}, {test_frames}",
                         "give positive counts with low <= high")
    if not (0 <= complex_fraction <= 1 and 0 <= unmodulated_fraction <= 1):
        raise InputError("complex_fraction", "fractions must lie in [0, 1]", "pass e.g. 0.3")

    root = np.random.SeedSequence(seed)
    movie_ss, *session_ss = root.spawn(1 + n_sessions)
    clips = _clip_library(np.random.default_rng(movie_ss), n_train, n_validation, n_test,
                          train_frames, test_frames, FRAME_SHAPE)
    sessions, truth_sessions = [], {}
    for s, (ss, n) in enumerate(zip(session_ss, counts, strict=True)):
        rng_neurons, rng_trials, rng_noise = (np.random.default_rng(x) for x in ss.spawn(3))
        name = f"mouse-{s + 1:02d}"
        params = _draw_neurons(rng_neurons, n, complex_fraction, unmodulated_fraction, eye_gain)
        filters = params.filters(FRAME_SHAPE)
        order = [i for i, c in enumerate(clips) for _ in range(n_repeats if c["tier"] == "test" else 1)]
        order = [order[i] for i in rng_trials.permutation(len(order))]
        behavior, pupil = zip(*(simulate_behaviour(rng_trials, len(clips[c]["frames"]),
                                                   params.eye_centre) for c in order), strict=True)
        # fixed standardisation of each neuron's drive, measured on the training clips
        raw = _drives(params, [clips[c]["frames"] for c in order], pupil, filters)
        train = np.concatenate([d for d, c in zip(raw, order, strict=True)
                                if clips[c]["tier"] == "train"])
        params.drive_mean = train.mean(axis=0)
        params.drive_std = train.std(axis=0) + 1e-6
        rates, gains, spikes, responses = [], [], [], []
        for d, b in zip(raw, behavior, strict=True):
            gain = behaviour_gain(params, b)
            z = (d - params.drive_mean) / params.drive_std
            rate = (params.rate_scale * np.logaddexp(0.0, params.slope * z + params.offset)
                    * gain).astype(np.float32)
            count = rng_noise.poisson(rate).astype(np.float32)
            rates.append(rate)
            gains.append(gain.astype(np.float32))
            spikes.append(count)
            if response == "spikes":
                responses.append(count)
            else:
                a = np.exp(-1.0 / (calcium_tau * frame_rate))
                trace = lfilter([1.0], [1.0, -a], count, axis=0)
                noise = calcium_noise * (trace.std(axis=0) + 1e-6)
                trace = trace + noise * rng_noise.standard_normal(trace.shape)
                responses.append(np.maximum(trace, 0.0).astype(np.float32))
        positions = np.stack([params.x * 400 + rng_neurons.normal(0, 40, n),
                              params.y * 300 + rng_neurons.normal(0, 40, n),
                              rng_neurons.uniform(200, 350, n)], axis=1).astype(np.float32)
        session = NeuronSession(
            name=name,
            videos=[clips[c]["frames"] for c in order],
            responses=responses,
            behavior=list(behavior),
            pupil_center=list(pupil),
            tiers=np.asarray([clips[c]["tier"] for c in order]),
            clip_ids=np.asarray([clips[c]["id"] for c in order]),
            frame_rate=float(frame_rate),
            neuron_ids=np.asarray([str(k + 1) for k in range(n)]),
            behavior_names=list(BEHAVIOR_NAMES),
            neuron_positions=positions,
            source=f"simulated session {name}",
        ).validate()
        sessions.append(session)
        truth_sessions[name] = {"params": params, "rate": rates, "gain": gains, "spikes": spikes}
    truth = {
        "seed": int(seed),
        "frame_rate": float(frame_rate),
        "frame_shape": list(FRAME_SHAPE),
        "response": response,
        "calcium_tau": float(calcium_tau),
        "clips": {c["id"]: {"tier": c["tier"], "n_frames": len(c["frames"]), "scene_cuts": c["cuts"]}
                  for c in clips},
        "sessions": truth_sessions,
    }
    return sessions, truth


def _truth_json(truth: dict, sessions: list[NeuronSession]) -> dict:
    out = {k: v for k, v in truth.items() if k != "sessions"}
    out["formulas"] = {
        "coordinates": "x = (col + .5) / W * 2 - 1, y = (row + .5) / H * 2 - 1; sigma and "
                       "frequency in x units (W / 2 pixels) on both axes",
        "rate": "rate_scale * softplus(slope * (drive - drive_mean) / drive_std + offset) * gain "
                "(spikes per frame)",
        "gain": f"exp(running_gain * running / {RUNNING_SCALE} + pupil_gain * (pupil - "
                f"{PUPIL_MEAN}) / {PUPIL_SCALE})",
        "drive": "simple: even filter then temporal kernel; complex: sqrt(even^2 + odd^2), each "
                 "temporally filtered; temporal_kernel[tau] weights frame t - tau",
        "eye": "field shift (pixels) = eye_gain * (pupil_center - eye_centre)",
    }
    out["sessions"] = {}
    for s in sessions:
        p = truth["sessions"][s.name]["params"]
        out["sessions"][s.name] = {
            "n_neurons": s.n_neurons,
            "n_trials": s.n_trials,
            "eye_gain": p.eye_gain,
            "eye_centre": p.eye_centre.tolist(),
            "n_complex": int((p.kind == "complex").sum()),
            "n_modulated": int(p.modulated.sum()),
            "neurons": [
                {"id": str(s.neuron_ids[i]), "kind": str(p.kind[i]), "x": float(p.x[i]),
                 "y": float(p.y[i]), "sigma": float(p.sigma[i]),
                 "orientation": float(p.orientation[i]), "frequency": float(p.frequency[i]),
                 "phase": float(p.phase[i]), "running_gain": float(p.running_gain[i]),
                 "pupil_gain": float(p.pupil_gain[i])}
                for i in range(s.n_neurons)
            ],
        }
    return out


def _truth_arrays(truth: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, t in truth["sessions"].items():
        for key, value in t["params"].as_arrays().items():
            out[f"{name}__{key}"] = value.astype(str) if value.dtype.kind in "OU" else value
        for key in ("rate", "gain") + (("spikes",) if truth["response"] == "calcium" else ()):
            for i, a in enumerate(t[key]):
                out[f"{name}__{key}_{i}"] = a
    return out


def write_neuron_study(out_dir: str | os.PathLike, *, overwrite: bool = False, nwb: bool = False,
                       **kwargs: Any) -> Path:
    """Simulate (``kwargs`` as :func:`simulate_neuron_study`) and write a study folder::

        <out>/mouse-01/  data/ meta/   (Sensorium 2023 layout)
        <out>/mouse-01.nwb             (with ``nwb=True``, through cinebrain.io.nwb)
        <out>/truth.npz                <session>__<param>, <session>__rate_<trial>, ..._gain_<trial>
                                       (and ..._spikes_<trial> under the calcium traces)
        <out>/truth.json               formulas, clips, per-neuron parameters

    Built in a hidden sibling folder and renamed when complete. An existing non-empty
    ``out_dir`` is refused unless ``overwrite``. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder", "choose a new folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "already exists and is not empty",
                         "choose a new folder, or replace it (--overwrite, overwrite=True)")
    if nwb:
        from cinebrain.io.nwb import write_nwb_session
    sessions, truth = simulate_neuron_study(**kwargs)
    with atomic_folder(out_dir) as tmp:
        for s in sessions:
            write_sensorium(s, tmp / s.name)
            if nwb:
                # a fixed start time keeps the files a function of the seed
                write_nwb_session(s, tmp / f"{s.name}.nwb",
                                  kind="roi" if truth["response"] == "calcium" else "spikes",
                                  seed=truth["seed"], session_start_time=_NWB_START)
        with open(tmp / "truth.npz", "wb") as f:
            np.savez_compressed(f, **_truth_arrays(truth))
        (tmp / "truth.json").write_text(json.dumps(_truth_json(truth, sessions), indent=1) + "\n")
    return out_dir


def find_neuron_truth(session_source: str | os.PathLike) -> Path | None:
    """The ``truth.npz`` of a simulated study beside a session (a Sensorium folder or an
    ``.nwb`` file that :func:`write_neuron_study` wrote), or None for real data."""
    p = Path(session_source)
    truth = p.parent / "truth.npz"
    return truth if truth.is_file() else None


def read_neuron_truth(path: str | os.PathLike) -> dict[str, dict]:
    """A study's ``truth.npz`` as ``{session: {"params": {name: (N,) array}, "rate":
    [(T_i, N) per trial], "gain": [...]}}`` (the noiseless rates and behaviour gains of
    every trial, in the session's trial order)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(path, f"not a readable truth file ({e})",
                         "write it again with cinebrain simulate-neurons") from None
    out: dict[str, dict] = {}
    with z:
        for key in z.files:
            session, _, rest = key.partition("__")
            entry = out.setdefault(session, {"params": {}, "rate": {}, "gain": {}})
            kind, _, index = rest.rpartition("_")
            if kind in ("rate", "gain", "spikes") and index.isdigit():
                entry.setdefault(kind, {})[int(index)] = z[key]
            else:
                entry["params"][rest] = z[key]
    for entry in out.values():
        for kind in ("rate", "gain", "spikes"):
            if kind in entry:
                entry[kind] = [entry[kind][i] for i in sorted(entry[kind])]
    return out
