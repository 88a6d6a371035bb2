"""cinebrain.nn: attention, encoders, readouts, the causal HRF layer, parameter counts and the benchmark."""

from __future__ import annotations

import math

import pytest
import torch

from cinebrain.errors import ConfigError
from cinebrain.nn import (
    AttentionPool,
    AudioEncoder,
    AudioEncoderConfig,
    CausalHRF,
    ConvImageConfig,
    ConvImageEncoder,
    CrossAttention,
    DropPath,
    LinearVoxelHead,
    MultiSubjectHead,
    SelfAttention,
    TextEncoder,
    TextEncoderConfig,
    Transformer,
    TransformerBlock,
    TransformerConfig,
    VideoEncoder,
    VideoEncoderConfig,
    ViTConfig,
    ViTImageEncoder,
    benchmark_encoders,
    count_parameters,
    format_table,
)
from cinebrain.nn.encoders import AGGREGATIONS

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_vit(**kw) -> ViTConfig:
    base = dict(image_size=(30, 40), patch_size=10, dim=16, depth=1, n_heads=2, out_dim=12)
    return ViTConfig(**{**base, **kw})


def tiny_conv(**kw) -> ConvImageConfig:
    base = dict(image_size=(16, 24), channels=(4, 8), out_dim=12, dropout=0.0, n_groups=2)
    return ConvImageConfig(**{**base, **kw})


def assert_learns(module: torch.nn.Module, make_input, forward=None) -> None:
    """Output depends on the input, and every parameter receives a non-zero gradient."""
    forward = forward or (lambda m, x: m(x))
    module.train()
    x1, x2 = make_input(), make_input()
    y1 = forward(module, x1)
    with torch.no_grad():
        y2 = forward(module, x2)
    assert not torch.allclose(y1, y2), "output does not depend on the input"
    (y1 * torch.randn_like(y1)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


# ----------------------------------------------------------------- parameter counts


def test_seed000_encoder_parameter_counts_on_meta_device():
    with torch.device("meta"):
        video = ConvImageEncoder(
            ConvImageConfig(
                image_size=(90, 160), channels=(32, 64, 128, 256), out_dim=1024, norm="batch"
            )
        )
        audio = AudioEncoder(
            AudioEncoderConfig(n_mels=128, channels=(32, 64, 128), out_dim=256, norm="batch")
        )
        text = TextEncoder(
            TextEncoderConfig(in_dim=1024, hidden_dims=(512,), out_dim=256, norm="batch")
        )
    assert all(p.is_meta for p in video.parameters())
    assert count_parameters(video) == 16_119_040
    assert count_parameters(audio) == 556_032
    assert count_parameters(text) == 657_664
    # spatial path 160x90 -> 80x45 -> 40x23 -> 20x12 -> 10x6, frequency 128 -> 16
    assert video.cfg.feature_shape == (256, 6, 10)
    assert audio.cfg.feature_shape == (128, 16)
    # group/layer norms have the same parameter count as BatchNorm
    for norm in ("group", "layer"):
        with torch.device("meta"):
            m = ConvImageEncoder(ConvImageConfig(out_dim=1024, norm=norm))
        assert count_parameters(m) == 16_119_040


@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("frame_encoder", ["conv", "vit"])
def test_everything_builds_on_meta(agg, frame_encoder):
    with torch.device("meta"):
        m = VideoEncoder(VideoEncoderConfig(frame_encoder=frame_encoder, aggregation=agg))
        vit = ViTImageEncoder(ViTConfig(pos_embed="sinusoidal"))
    assert count_parameters(m) > 0 and count_parameters(vit) > 0
    assert all(p.is_meta for p in m.parameters())


def test_conv_encoder_spatial_path_matches_seed():
    enc = ConvImageEncoder(
        ConvImageConfig(image_size=(90, 160), channels=(2, 2, 2, 2), out_dim=5, n_groups=1)
    )
    sizes = []
    for block in enc.blocks:
        block.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    assert enc(torch.randn(2, 3, 90, 160)).shape == (2, 5)
    assert sizes == [(45, 80), (23, 40), (12, 20), (6, 10)]


# ----------------------------------------------------------------------- attention


def reference_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def test_self_attention_matches_explicit_softmax():
    attn = SelfAttention(8, 2).eval()
    x = torch.randn(3, 5, 8)
    q, k, v = attn.qkv(x).view(3, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    mask = torch.tensor([True, True, True, False, True])[None, None, None]
    expected = attn.proj(reference_attention(q, k, v, mask).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(attn(x, mask=mask), expected)


def test_causal_attention_ignores_the_future():
    attn = SelfAttention(8, 2, causal=True).eval()
    x = torch.randn(2, 6, 8)
    y = attn(x)
    x2 = x.clone()
    x2[:, 4:] += 10.0
    y2 = attn(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])
    # causal combined with padding at the end: padded keys are ignored as well
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 5] = False
    y3 = attn(x2, mask=mask[:, None, None, :])
    torch.testing.assert_close(y3[:, :5], y2[:, :5])


def test_rope_hook_is_applied_to_queries_and_keys():
    attn = SelfAttention(8, 2).eval()
    x = torch.randn(2, 4, 8)
    calls = []

    def rope(q, k):
        calls.append((q.shape, k.shape))
        return q, torch.zeros_like(k)  # uniform attention

    y = attn(x, rope=rope)
    assert calls == [((2, 2, 4, 4), (2, 2, 4, 4))]
    v = attn.qkv(x)[..., 16:]  # (B, N, D) values
    torch.testing.assert_close(y, attn.proj(v.mean(1, keepdim=True).expand(-1, 4, -1)))


def test_cross_attention_and_pool_shapes():
    ca = CrossAttention(8, 2, context_dim=6)
    assert ca(torch.randn(2, 3, 8), torch.randn(2, 7, 6)).shape == (2, 3, 8)
    pool = AttentionPool(8, 2, n_queries=2)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = pool(torch.randn(2, 3, 8), mask)
    assert out.shape == (2, 2, 8) and torch.isfinite(out).all()
    assert pool.last_weights[0, :, :, 1].abs().max() == 0  # masked token gets no weight


def test_drop_path_drops_whole_samples():
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    y = dp.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample.std(dim=1) == 0).all()
    assert torch.equal(dp.eval()(x), x)


def test_transformer_block_and_stack_learn():
    cfg = TransformerConfig(dim=8, depth=2, n_heads=2, drop_path=0.1)
    assert TransformerBlock(cfg)(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    stack = Transformer(cfg)
    assert [b.drop_path.p for b in stack.blocks] == [0.0, 0.1]
    stack.blocks[1].drop_path.p = 0.0  # deterministic gradients for the check
    assert_learns(stack, lambda: torch.randn(2, 5, 8))


# ------------------------------------------------------------------------- images


@pytest.mark.parametrize("size,patch", [((90, 160), 10), ((96, 64), 16), ((30, 40), (10, 20))])
@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_non_square_shapes(size, patch, pos, pool):
    cfg = tiny_vit(image_size=size, patch_size=patch, pos_embed=pos, pool=pool)
    vit = ViTImageEncoder(cfg)
    assert vit(torch.randn(2, 3, *size)).shape == (2, 12)
    n_tokens = cfg.grid[0] * cfg.grid[1] + 1
    assert vit.tokens(torch.randn(1, 3, *size)).shape == (1, n_tokens, 16)


def test_vit_interpolates_position_embedding_for_other_sizes():
    vit = ViTImageEncoder(tiny_vit(image_size=(30, 40)))
    assert vit(torch.randn(2, 3, 50, 20)).shape == (2, 12)  # 5x2 grid from 3x4
    with pytest.raises(ValueError, match="divisible"):
        vit(torch.randn(2, 3, 31, 40))


def test_vit_config_validation():
    with pytest.raises(ConfigError, match="cls"):
        ViTConfig(pool="cls", cls_token=False)
    with pytest.raises(ConfigError, match="divisible"):
        ViTConfig(image_size=(90, 160), patch_size=16)
    with pytest.raises(ConfigError, match="pool"):
        ViTConfig(pool="max")


@pytest.mark.parametrize("pool,cls_token", [("cls", True), ("mean", False)])
def test_vit_learns(pool, cls_token):
    vit = ViTImageEncoder(tiny_vit(pool=pool, cls_token=cls_token))
    assert_learns(vit, lambda: torch.randn(2, 3, 30, 40))


@pytest.mark.parametrize("norm", ["batch", "group", "layer", "none"])
def test_conv_encoder_norms(norm):
    enc = ConvImageEncoder(tiny_conv(norm=norm))
    assert enc(torch.randn(3, 3, 16, 24)).shape == (3, 12)
    assert_learns(enc, lambda: torch.randn(3, 3, 16, 24))


def test_conv_encoder_rejects_wrong_size():
    with pytest.raises(ValueError, match="expects"):
        ConvImageEncoder(tiny_conv())(torch.randn(1, 3, 24, 16))


# -------------------------------------------------------------------------- video


def tiny_video(**kw) -> VideoEncoderConfig:
    base = dict(
        conv=tiny_conv(),
        vit=tiny_vit(image_size=(16, 24), patch_size=8),
        n_frames=4,
        n_heads=2,
        lstm_hidden=10,
        temporal_depth=1,
        out_dim=7,
    )
    return VideoEncoderConfig(**{**base, **kw})


VIDEO_VARIANTS = [
    dict(aggregation="attention"),
    dict(aggregation="mean"),
    dict(aggregation="max"),
    dict(aggregation="lstm", lstm_pool="last"),
    dict(aggregation="lstm", lstm_pool="mean", lstm_layers=2),
    dict(aggregation="transformer", temporal_pool="mean"),
    dict(aggregation="transformer", temporal_pool="cls"),
    dict(aggregation="attention", frame_encoder="vit"),
    dict(aggregation="transformer", frame_encoder="vit", out_dim=None),
]


@pytest.mark.parametrize("variant", VIDEO_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_video_aggregations(variant):
    enc = VideoEncoder(tiny_video(**variant))
    out_dim = enc.out_dim
    assert enc(torch.randn(2, 4, 3, 16, 24)).shape == (2, out_dim)
    assert enc(torch.randn(2, 6, 3, 16, 24)).shape == (2, out_dim)  # more frames than n_frames
    assert_learns(enc, lambda: torch.randn(2, 4, 3, 16, 24))


@pytest.mark.parametrize("frame_encoder", ["conv", "vit"])
def test_video_chunked_equals_unchunked(frame_encoder):
    whole = VideoEncoder(tiny_video(frame_encoder=frame_encoder)).train()
    chunked = VideoEncoder(tiny_video(frame_encoder=frame_encoder, chunk_size=3)).train()
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(2, 4, 3, 16, 24)
    torch.testing.assert_close(chunked(x), whole(x))


def test_video_checkpointed_equals_plain():
    plain = VideoEncoder(tiny_video(aggregation="transformer")).train()
    ckpt = VideoEncoder(tiny_video(aggregation="transformer", checkpoint=True, chunk_size=4))
    ckpt.load_state_dict(plain.state_dict())
    ckpt.train()
    x = torch.randn(2, 4, 3, 16, 24)
    y_plain, y_ckpt = plain(x), ckpt(x)
    torch.testing.assert_close(y_ckpt, y_plain)
    g = torch.randn_like(y_plain)
    (y_plain * g).sum().backward()
    (y_ckpt * g).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_video_config_validation():
    with pytest.raises(ConfigError, match="aggregation"):
        VideoEncoderConfig(aggregation="gru")


# -------------------------------------------------------------------- audio, text


def test_audio_encoder_single_and_multi_frame():
    cfg = AudioEncoderConfig(n_mels=32, channels=(4, 8), out_dim=6, n_groups=2, dropout=0.0)
    enc = AudioEncoder(cfg)
    assert enc(torch.randn(3, 32)).shape == (3, 6)
    assert_learns(enc, lambda: torch.randn(3, 32))
    multi = AudioEncoder(AudioEncoderConfig(**{**cfg.__dict__, "n_frames": 5}))
    assert multi(torch.randn(3, 5, 32)).shape == (3, 6)
    assert_learns(multi, lambda: torch.randn(3, 5, 32))
    with pytest.raises(ValueError, match="expects"):
        multi(torch.randn(3, 32))


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_text_encoder(norm):
    cfg = TextEncoderConfig(in_dim=20, hidden_dims=(16, 12), out_dim=8, norm=norm, dropout=0.0)
    enc = TextEncoder(cfg)
    assert enc(torch.randn(4, 20)).shape == (4, 8)
    assert_learns(enc, lambda: torch.randn(4, 20))


# ------------------------------------------------------------------------ readouts


def test_linear_voxel_head_full_and_low_rank():
    full = LinearVoxelHead(10, 50)
    low = LinearVoxelHead(10, 50, rank=3)
    assert full(torch.randn(2, 10)).shape == (2, 50)
    assert low(torch.randn(2, 10)).shape == (2, 50)
    assert count_parameters(full) == 10 * 50 + 50
    assert count_parameters(low) == 10 * 3 + 3 * 50 + 50
    assert_learns(low, lambda: torch.randn(2, 10))
    with pytest.raises(ConfigError):
        LinearVoxelHead(10, 50, rank=0)


def test_multi_subject_head():
    head = MultiSubjectHead({"sub-01": 30, "sub-02": 20}, in_dim=8, rank=4, shared_basis=True)
    x = torch.randn(3, 8)
    assert head(x, "sub-01").shape == (3, 30)
    assert head(x, "sub-02").shape == (3, 20)
    assert count_parameters(head) == 8 * 4 + (4 * 30 + 30) + (4 * 20 + 20)
    assert head.subjects == ["sub-01", "sub-02"]
    with pytest.raises(KeyError, match="sub-03"):
        head(x, "sub-03")
    separate = MultiSubjectHead({"a": 5, "b": 6}, in_dim=8)
    assert count_parameters(separate) == (8 * 5 + 5) + (8 * 6 + 6)


# ----------------------------------------------------------------------- benchmark


def test_benchmark_runs_on_tiny_sizes():
    rows = benchmark_encoders(scale="tiny", batch_size=2, repeats=1, warmup=0, memory="rss")
    names = {r["name"] for r in rows}
    assert {"image_vit", "image_conv", "audio_conv1d", "text_mlp"} <= names
    assert {f"video_{a}" for a in AGGREGATIONS} <= names
    assert {f"fusion_{m}" for m in ("concat", "weighted_sum", "mlp", "attention")} <= names
    for r in rows:
        assert r["forward_ms"] > 0 and r["forward_backward_ms"] > 0
        assert r["samples_per_s"] > 0 and r["params"] > 0
        assert r["peak_memory_mb"] >= 0 and r["memory"]
    table = format_table(rows)
    assert "video_lstm" in table and "samples/s" in table
    only = benchmark_encoders(
        scale="tiny", batch_size=2, repeats=1, only=["text"], backward=False, memory="none"
    )
    assert [r["name"] for r in only] == ["text_mlp"] and only[0]["forward_backward_ms"] is None
    assert math.isnan(only[0]["peak_memory_mb"]) and "-" in format_table(only)
    with pytest.raises(ConfigError):
        benchmark_encoders(scale="huge")


@pytest.mark.slow
def test_benchmark_profiler_memory_counts_gradients():
    """The CPU default measures allocations: a training step holds at least the gradients."""
    (row,) = benchmark_encoders(scale="tiny", batch_size=2, repeats=1, only=["image_conv"])
    assert row["memory"] == "profiler"
    assert row["peak_memory_mb"] * 2**20 >= 4 * row["params"]


# --------------------------------------------------------------------------- HRF layer


@pytest.mark.parametrize("mode", ["fixed", "learned", "learned_per_unit"])
def test_hrf_layer_is_causal_impulse(mode):
    torch.manual_seed(0)
    hrf = CausalHRF(n_taps=12, tr=1.5, mode=mode, dim=3)
    if mode != "fixed":
        with torch.no_grad():
            hrf.kernel.normal_()  # any learned kernel must stay causal
    W, t0 = 20, 7
    z = torch.zeros(1, W, 3)
    z[0, t0] = 1.0
    y = hrf(z)[0, :, 0]
    assert torch.all(y[:t0] == 0)  # nothing before the stimulus
    k = hrf.kernel if hrf.kernel.ndim == 1 else hrf.kernel[0]
    torch.testing.assert_close(y[t0 : t0 + 12], k.detach())
    if mode == "fixed":
        assert (
            2 <= int(y.argmax()) - t0 <= 5
        )  # canonical peak 3-7.5 s after the stimulus at TR 1.5 s


@pytest.mark.parametrize("model", ["spm", "glover"])
def test_hrf_layer_kernel_is_the_timing_hrf(model):
    from cinebrain.timing import hrf

    layer = CausalHRF(n_taps=22, tr=1.5, mode="fixed", hrf_model=model)
    want = hrf(1.5, model=model, time_length=22 * 1.5)  # 33 s: 22 lags
    assert len(want) == 22
    torch.testing.assert_close(layer.kernel, torch.as_tensor(want, dtype=torch.float32))
    assert count_parameters(layer) == 0
    assert count_parameters(CausalHRF(22, 1.5, "learned")) == 22
    assert count_parameters(CausalHRF(22, 1.5, "learned_per_unit", dim=5)) == 5 * 22
    z = torch.randn(2, 6, 3)
    assert torch.equal(CausalHRF(22, 1.5, "none")(z), z)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[:, :2] = False  # padding before a run start contributes nothing
    out = layer(z, valid)
    torch.testing.assert_close(out, layer(z * valid.unsqueeze(-1)))
    with pytest.raises(ConfigError, match="hrf"):
        CausalHRF(22, 1.5, "gamma")
