"""cinebrain.features.video on real (tiny) H.264 movies."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.errors import InputError
from cinebrain.features.video import MotionEnergyPyramid, area_matrix, extract_video
from cinebrain.io.video import write_video

FPS = 24
W, H = 64, 36


def _write(path, frames):
    write_video(path, (np.repeat(f[..., None], 3, axis=2) for f in frames), FPS, (W, H))
    return path


@pytest.fixture(scope="module")
def square_movie(tmp_path_factory):
    """2 s: a white 8x8 square on black, still for 1 s in the top-left, then moving right
    along the bottom half for 1 s. Brightness steps up in the second half (gray background)."""
    frames = []
    for i in range(2 * FPS):
        f = np.zeros((H, W), np.uint8)
        if i < FPS:
            f[4:12, 4:12] = 255
        else:
            f[:] = 60
            x = 4 + 2 * (i - FPS)
            f[24:32, x : x + 8] = 255
        frames.append(f)
    return _write(tmp_path_factory.mktemp("video") / "square.mp4", frames)


def _grating(direction: int, n: int = 2 * FPS) -> list[np.ndarray]:
    x = np.arange(W)
    # 3 cycles per image height (12 px period), drifting 4 Hz.
    return [
        (127 + 100 * np.cos(2 * np.pi * (x / 12.0 - direction * 4.0 * i / FPS)))[None, :].repeat(H, 0).astype(np.uint8)
        for i in range(n)
    ]


def test_samples_one_per_frame_with_frame_times(square_movie):
    res = extract_video(square_movie, size=(W, H), pixel_size=(16, 9), progress=False)
    assert list(res) == ["pixels", "luminance", "motion", "motion_energy"]
    for name, fs in res.items():
        assert fs.n_samples == 2 * FPS, name
        assert fs.values.dtype == np.float32 and np.all(np.isfinite(fs.values))
        np.testing.assert_allclose(fs.onsets, np.arange(2 * FPS) / FPS, atol=1e-6)
        np.testing.assert_allclose(fs.durations, 1 / FPS, atol=1e-6)
        assert len(fs.feature_names) == fs.n_features
    assert res["pixels"].n_features == 16 * 9
    assert res["motion"].n_features == 17


def test_luminance_and_pixels_follow_the_picture(square_movie):
    res = extract_video(square_movie, spaces=("luminance", "pixels"), size=(W, H), pixel_size=(16, 9), progress=False)
    lum = res["luminance"].values
    assert lum[FPS:, 0].mean() > lum[:FPS, 0].mean() + 0.15  # gray background in second half
    np.testing.assert_allclose(lum[2, 0], 64 / (W * H), atol=0.01)  # 8x8 white of 64x36
    assert lum[2, 1] > 0.05  # the square gives contrast
    pix = res["pixels"].values[2].reshape(9, 16)
    assert np.unravel_index(np.argmax(pix), pix.shape) == (1, 1)  # square at pixels 4..12 -> cell (1, 1)


def test_motion_responds_where_and_when_things_move(square_movie):
    fs = extract_video(square_movie, spaces=("motion",), size=(W, H), progress=False)["motion"]
    glob = fs.values[:, 0]
    assert glob[0] == 0
    assert np.all(glob[2 : FPS - 1] < 0.01)  # still square: no motion
    assert np.all(glob[FPS + 2 :] > 0.01)  # moving square
    grid = fs.values[FPS + 4, 1:].reshape(4, 4)  # (rows, cols)
    assert grid[2:].sum() > 10 * grid[:2].sum()  # motion in the bottom half only


@pytest.mark.parametrize("direction", [1, -1])
def test_motion_energy_is_direction_selective(tmp_path, direction):
    path = _write(tmp_path / "grating.mp4", _grating(direction))
    fs = extract_video(path, spaces=("motion_energy",), size=(W, H), progress=False)["motion_energy"]
    names = np.array(fs.feature_names)
    mid = fs.values[12:-12].mean(axis=0)
    right = mid[np.char.startswith(names, "sf3_tf4_dir0_")].mean()
    left = mid[np.char.startswith(names, "sf3_tf4_dir180_")].mean()
    if direction == 1:
        assert right > left + 1.0
    else:
        assert left > right + 1.0


def test_motion_energy_streaming_matches_one_batch_and_static_is_silent():
    rng = np.random.default_rng(0)
    frames = rng.random((50, 18, 32)).astype(np.float32)
    p = MotionEnergyPyramid(fps=24)
    p.reset()
    whole = np.concatenate([p.push(frames), p.flush()])
    p.reset()
    parts = [p.push(frames[i : i + 7]) for i in range(0, 50, 7)]
    chunked = np.concatenate(parts + [p.flush()])
    assert whole.shape == (50, p.n_features)
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-4)
    p.reset()
    static = np.concatenate([p.push(np.repeat(frames[:1], 30, axis=0)), p.flush()])
    moving = np.char.find(np.array(p.feature_names), "_tf0_") < 0  # temporal frequency > 0
    assert static[:, moving].max() < 0.01
    assert static[:, ~moving].max() > 1.0


def test_area_matrix_is_block_mean():
    x = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    np.testing.assert_allclose(area_matrix(6, 3) @ x @ area_matrix(8, 4).T, x.reshape(3, 2, 4, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(area_matrix(7, 3).sum(axis=1), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- pymoten
# pymoten (Nishimoto et al. 2011's motion energy, gallantlab) is the reference. Its
# pyramid differs from ours by design (a fixed 2/3 s window and a temporal envelope
# relative to it, pixel grids from linspace(0, 1, n), no DC removal or unit norm), so
# the filters are compared like with like: the energy of *our* 3D Gabors computed by
# pymoten's own separable convolution, and the tuning of the two pyramids' filters at
# the same spatial frequency, temporal frequency and direction.


def test_motion_energy_equals_pymoten_energy_of_the_same_gabors():
    from moten.core import dotdelay_frames

    rng = np.random.default_rng(3)
    frames = rng.random((60, 18, 32)).astype(np.float32)
    p = MotionEnergyPyramid(fps=24)
    p.reset()
    ours = np.expm1(np.concatenate([p.push(frames), p.flush()]).astype(np.float64)) * p.energy_scale
    stim = frames.reshape(len(frames), -1).astype(np.float64)
    S = p.spatial_filters.astype(np.float64)
    T = p.temporal_kernels.astype(np.float64)[::-1]  # pymoten convolves, we correlate
    n = p.n_spatial
    n_pos = n // p.n_orient
    zero = np.zeros(T.shape[0])
    ref, k = [], 0
    for tf in p.temporal_frequencies:
        # pymoten's outputs are sin/cos(spatial phase + its temporal phase); the sign of
        # the temporal sine picks the direction: ours 0..180 with -sin, 180..360 with +sin.
        if tf == 0:
            pairs = [[(zero, T[:, k])] * p.n_orient]
            k += 1
        else:
            pairs = [[(-T[:, k + 1], T[:, k])] * p.n_orient, [(T[:, k + 1], T[:, k])] * p.n_orient]
            k += 2
        block = np.zeros((len(frames), n_pos, len(pairs) * p.n_orient))
        for pos in range(n_pos):
            for half, pair in enumerate(pairs):
                for o, (t_sin, t_cos) in enumerate(pair):
                    i = pos * p.n_orient + o
                    s, c = dotdelay_frames(S[:, n + i], S[:, i], t_sin, t_cos, stim, masklimit=0.0)
                    block[:, pos, half * p.n_orient + o] = np.hypot(s, c)
        ref.append(block.reshape(len(frames), -1))
    ref = np.concatenate(ref, axis=1)
    assert ref.shape == ours.shape
    h = p.half_window  # pymoten pads the ends with zeros, we with the first / last frame
    np.testing.assert_allclose(ours[h:-h], ref[h:-h], rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("tf", [2.0, 4.0])
def test_motion_energy_tuning_agrees_with_pymoten(tf):
    from moten.core import dotdelay_frames, mk_3d_gabor

    fps, w, h, sf = 24, 32, 18, 3.0
    p = MotionEnergyPyramid(fps=fps, size=(w, h))
    names = np.array(p.feature_names)
    X, Y = np.meshgrid((np.arange(w) + 0.5) / h, (np.arange(h) + 0.5) / h)
    directions = np.arange(8) * 45
    for d in directions:
        a = np.deg2rad(d)  # our convention: towards (cos d, sin d), y downwards
        t = np.arange(2 * fps)[:, None, None] / fps
        movie = (0.5 + 0.4 * np.cos(2 * np.pi * (sf * (X * np.cos(a) + Y * np.sin(a)) - tf * t))).astype(np.float32)
        p.reset()
        E = np.expm1(np.concatenate([p.push(movie), p.flush()])[12:-12]).mean(axis=0)  # raw energy
        ours = [E[np.char.startswith(names, f"sf{sf:g}_tf{tf:g}_dir{e:g}_")].mean() for e in directions]
        theirs = []
        for e in directions:
            gabor = mk_3d_gabor((h, w), fps, centerh=w / h / 2, centerv=0.5, direction=float(e), spatial_freq=sf,
                                spatial_env=min(0.6 / sf, 0.3), temporal_freq=tf, temporal_env=min(10 / tf, 0.3))
            s, c = dotdelay_frames(*gabor, movie.reshape(len(movie), -1))
            theirs.append(np.hypot(s, c)[12:-12].mean())
        assert directions[np.argmax(ours)] == d
        # pymoten's direction e drifts towards (cos e, -sin e) in its filter (y upwards),
        # and its delays run backwards in time, so our d is its 180 - d.
        assert directions[np.argmax(theirs)] == (180 - d) % 360
        for energies in (np.array(ours), np.array(theirs)):
            assert np.sort(energies)[-2] < 0.5 * energies.max()  # sharply tuned, not a tie


def test_unknown_space_and_missing_file(square_movie, tmp_path):
    with pytest.raises(InputError, match="unknown video feature space"):
        extract_video(square_movie, spaces=("colour",), progress=False)
    with pytest.raises(InputError):
        extract_video(tmp_path / "nope.mp4", progress=False)
