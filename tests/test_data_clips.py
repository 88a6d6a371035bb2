"""Movie frames on a grid and the clips of self-supervised video models (data.clips)."""

import numpy as np
import pytest

from cinebrain.data.clips import (
    ClipDataset,
    ClipPairDataset,
    clip_starts,
    movie_frames,
    segment_frames,
    split_starts,
)
from cinebrain.errors import InputError
from cinebrain.io.video import write_video


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """24 fps, 4 s: frame k has luminance 10 * (k // 3) (constant within 3-frame blocks)."""
    path = tmp_path_factory.mktemp("clips") / "m.mp4"
    frames = [np.full((32, 48, 3), 10 * (k // 3) % 250, np.uint8) for k in range(96)]
    write_video(path, frames, fps=24, size=(48, 32), crf=0)
    return path


def test_frames_are_block_means_on_the_grid(movie):
    frames, onsets = movie_frames(movie, size=(16, 8), fps=8)
    assert frames.shape == (32, 8, 16) and frames.dtype == np.float32
    np.testing.assert_allclose(onsets, np.arange(32) / 8)
    expected = (10 * np.arange(32) % 250) / 255.0 - 0.5
    np.testing.assert_allclose(frames.mean(axis=(1, 2)), expected, atol=2.5 / 255)
    assert frames.min() >= -0.5 and frames.max() <= 0.5


def test_frames_of_a_part_and_bad_rate(movie):
    frames, onsets = movie_frames(movie, size=(16, 8), fps=8, start=1.0, end=2.0)
    assert len(frames) == 8 and onsets[0] == 1.0
    with pytest.raises(InputError, match="frame rate"):
        movie_frames(movie, size=(16, 8), fps=50)


def test_no_clip_crosses_a_segment_edge_and_validation_does_not_overlap():
    onsets = np.arange(100) / 10.0
    ranges = segment_frames(onsets, 10.0, [(0.0, 4.0), (6.0, 10.0)])
    assert ranges == [(0, 40), (60, 100)]
    starts = clip_starts(ranges, 16, 4)
    assert all((s + 16 <= 40) or (s >= 60 and s + 16 <= 100) for s in starts)
    train, val = split_starts(starts, 16, 0.25)
    assert len(val) >= 1 and (train + 16 <= val.min()).all()


def test_datasets_shapes_and_pairs_follow_each_other():
    frames = np.arange(50, dtype=np.float32)[:, None, None] * np.ones((1, 4, 6), np.float32)
    one = ClipDataset(frames, [0, 10], 8)[1]["video"]
    assert one.shape == (1, 8, 4, 6) and one[0, 0, 0, 0] == 10
    pair = ClipPairDataset(frames, [3], 8)[0]
    assert pair["previous"][0, -1, 0, 0] == 10 and pair["next"][0, 0, 0, 0] == 11
    with pytest.raises(ValueError):
        ClipPairDataset(frames, [40], 8)


def test_code_pairs_pair_each_clip_with_the_next():

    from cinebrain.data.clips import CodePairDataset, encode_clips

    frames = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    starts = np.array([0, 4, 8, 12])
    codes = encode_clips(lambda v: v[:, 0, :, :1, :1].long(), frames, starts, 4)
    assert codes.shape == (4, 4, 1, 1) and codes[1, 0, 0, 0] == 4
    ds = CodePairDataset(codes, starts, [0, 8], 4)
    assert ds[1]["previous_codes"][0, 0, 0] == 8 and ds[1]["next_codes"][0, 0, 0] == 12
    with pytest.raises(ValueError, match="frame 16"):
        CodePairDataset(codes, starts, [12], 4)
