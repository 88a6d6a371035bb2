"""cinebrain.features.video on real (tiny) H.264 movies."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.errors import InputError
from cinebrain.features.video import MotionEnergyPyramid, area_matrix, area_resize, extract_video
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


def test_area_resize_is_block_mean():
    x = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    np.testing.assert_allclose(area_resize(x, (4, 3)), x.reshape(3, 2, 4, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(area_matrix(7, 3).sum(axis=1), 1.0, rtol=1e-6)


def test_unknown_space_and_missing_file(square_movie, tmp_path):
    with pytest.raises(InputError, match="unknown video feature space"):
        extract_video(square_movie, spaces=("colour",), progress=False)
    with pytest.raises(InputError):
        extract_video(tmp_path / "nope.mp4", progress=False)
