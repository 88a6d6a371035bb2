import pytest
import torch

from cinebrain.errors import InputError
from cinebrain.models.vivit import (
    ViViTConfig,
    ViViTCore,
    count_parameters,
    get_preset,
    preset_parameters,
)
from cinebrain.nn.rope import apply_rope, rope_angles


def _core(**kw):
    torch.manual_seed(0)
    return ViViTCore(ViViTConfig(embedding_dim=32, num_spatial_blocks=1, num_temporal_blocks=1, num_heads=2,
                                 head_dim=16, ff_dim=64, patch_size=(2, 4, 4), **kw))


def test_non_square_grid_shape():
    core = _core().eval()
    y = core(torch.randn(2, 1, 6, 36, 64))
    assert y.shape == (2, 32, 6, 9, 16) and core.out_shape(6, 36, 64) == (6, 9, 16)


def test_causal_with_registers():
    core = _core(num_registers=2).eval()
    v = torch.randn(1, 1, 8, 36, 64)
    v2 = v.clone()
    v2[:, :, 5:] += 1.0
    a, b = core(v), core(v2)
    assert torch.allclose(a[:, :, :5], b[:, :, :5], atol=1e-5)
    assert not torch.allclose(a[:, :, 5:], b[:, :, 5:])


def test_token_dropout_shortens_sequence():
    core = _core(token_dropout=0.5).train()
    core(torch.randn(1, 1, 4, 36, 64))
    assert core.last_spatial_length == 72
    core.eval()(torch.randn(1, 1, 4, 36, 64))
    assert core.last_spatial_length == 144


def test_rope_relative():
    q, k = torch.randn(16), torch.randn(16)
    ang = rope_angles(torch.arange(10), 16)
    rq, rk = apply_rope(q.expand(10, 16), ang), apply_rope(k.expand(10, 16), ang)
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(10), atol=1e-5)
    assert torch.allclose(rq[5] @ rk[2], rq[7] @ rk[4], atol=1e-4)


def test_presets_and_unknown():
    counts = preset_parameters("vivit-baseline")
    model = ViViTCore(get_preset("vivit-small"))
    assert sum(count_parameters(model).values()) == sum(p.numel() for p in model.parameters())
    assert counts["spatial"] > 0
    with pytest.raises(InputError, match="vivit-small"):
        get_preset("nope")


def test_grad_checkpointing_same_gradients():
    core = _core(num_registers=1).train()
    x = torch.randn(1, 1, 4, 36, 64)
    core(x).square().sum().backward()
    g1 = [p.grad.clone() for p in core.parameters()]
    core.zero_grad()
    core.set_grad_checkpointing(True)
    core(x).square().sum().backward()
    for a, p in zip(g1, core.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_sdpa_block_equals_naive_attention():
    core = _core().eval()
    blk = core.temporal[0]
    x = torch.randn(3, 5, 32)
    ang = rope_angles(torch.arange(5), 16)
    out = blk(x, ang)
    q, k, v = blk.qkv(blk.norm1(x)).view(3, 5, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = apply_rope(blk.q_norm(q), ang), apply_rope(blk.k_norm(k), ang)
    s = q @ k.transpose(-1, -2) / 4.0
    s = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    a = (s.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, 32)
    h = x + blk.proj(a)
    g, u = blk.w12(blk.norm2(h)).chunk(2, dim=-1)
    ref = h + blk.w3(torch.nn.functional.silu(g) * u)
    assert torch.allclose(out, ref, atol=1e-5)


def test_causal_temporal_patch_stride():
    core = ViViTCore(ViViTConfig(embedding_dim=32, num_spatial_blocks=1, num_temporal_blocks=1, num_heads=2,
                                 head_dim=16, ff_dim=64, patch_size=(4, 4, 4))).eval()
    v = torch.randn(1, 1, 12, 36, 64)
    v2 = v.clone()
    v2[:, :, 9:] -= 2.0
    a, b = core(v), core(v2)
    assert a.shape == (1, 32, 12, 9, 16)
    assert torch.allclose(a[:, :, :9], b[:, :, :9], atol=1e-5)


def test_flops_positive_and_scale_with_depth():
    from cinebrain.models.vivit import flops_per_sample
    a = flops_per_sample(get_preset("vivit-baseline"), 32, 36, 64)
    b = flops_per_sample(get_preset("vivit-baseline", num_spatial_blocks=12, num_temporal_blocks=12), 32, 36, 64)
    assert a > 0 and b > 1.9 * a


def test_parallel_block_is_attention_plus_feed_forward_of_one_norm():
    """parallel_block: x + attn(n(x)) + ffn(n(x)), one LayerNorm per block, still causal."""
    import torch.nn.functional as F

    core = _core(parallel_block=True).eval()
    blk = core.temporal[0]
    assert blk.norm2 is None
    x = torch.randn(3, 5, 32)
    h = blk.norm1(x)
    q, k, v = blk.qkv(h).view(3, 5, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = blk.q_norm(q), blk.k_norm(k)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 5, 32)
    g, u = blk.w12(h).chunk(2, dim=-1)
    want = x + blk.proj(a) + blk.w3(F.silu(g) * u)
    assert torch.allclose(blk(x, None), want, atol=1e-5)
    serial = _core()
    assert (sum(p.numel() for p in serial.parameters()) - sum(p.numel() for p in core.parameters())
            == 2 * 2 * 32)  # one LayerNorm (weight + bias) fewer in each of the two blocks
    v1 = torch.randn(1, 1, 6, 36, 64)
    v2 = v1.clone()
    v2[:, :, 4:] += 1.0
    assert torch.allclose(core(v1)[:, :, :4], core(v2)[:, :, :4], atol=1e-5)


def test_params_command_prints_every_module_and_the_total(capsys):
    from cinebrain.cli import main

    assert main(["params", "vivit-small"]) == 0
    out = capsys.readouterr().out
    counts = preset_parameters("vivit-small")
    for name, n in counts.items():
        assert f"{n:,}" in out and name in out
    model = ViViTCore(get_preset("vivit-small"))
    assert "total" in out and f"{sum(p.numel() for p in model.parameters()):,}" in out
    assert sum(counts.values()) == 4_844_352  # embedding 192, 4 + 4 blocks, 8x8x8 tubelets
    assert main(["params", "vivit-huge"]) == 2
    assert "not a model preset" in capsys.readouterr().err
