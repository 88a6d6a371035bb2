"""Tests of cinebrain.models.vqvae and cinebrain.models.videogpt (seed 004's two stages)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from cinebrain.errors import ConfigError, InputError
from cinebrain.models import videogpt as gpt
from cinebrain.models import vqvae as vq
from cinebrain.models.videogpt import VideoGPT, VideoGPTConfig
from cinebrain.models.vqvae import (
    VQVAE,
    Codebook,
    SamePadConv3d,
    SamePadConvTranspose3d,
    VQVAEConfig,
)
from cinebrain.train import TrainConfig, Trainer

torch.set_num_threads(1)


# ---------------------------------------------------------------------- data and helpers
def moving_blobs(n: int, t: int = 16, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` grey clips (n, 1, t, h, w) in [-0.5, 0.5]: two Gaussian blobs each, drifting."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.arange(h, dtype=torch.float32)[None, None, :, None]
    xx = torch.arange(w, dtype=torch.float32)[None, None, None, :]
    f = torch.arange(t, dtype=torch.float32)[None, :, None, None]
    clips = torch.zeros(n, t, h, w)
    for _ in range(2):
        y0, x0 = (torch.rand(n, generator=g) * h)[:, None, None, None], (torch.rand(n, generator=g) * w)[:, None, None, None]
        vy, vx = ((torch.rand(2, n, generator=g) - 0.5) * 3)[:, :, None, None, None]
        r = (2 + 4 * torch.rand(n, generator=g))[:, None, None, None]
        amp = (0.5 + 0.5 * torch.rand(n, generator=g))[:, None, None, None]
        cy, cx = (y0 + vy * f) % h, (x0 + vx * f) % w
        clips += amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return clips.clamp(0, 1)[:, None] - 0.5


def small_vqvae(**overrides) -> VQVAE:
    values = dict(input_shape=(8, 16, 16), n_hiddens=12, n_res_layers=1, embedding_dim=8, n_codes=16,
                  downsample=(2, 4, 4))
    values.update(overrides)
    return VQVAE(VQVAEConfig(**values))


def small_gpt(vqvae: VQVAE | None = None, **overrides) -> VideoGPT:
    vqvae = vqvae if vqvae is not None else small_vqvae()
    values = dict(hidden_dim=24, layers=2, heads=2, dropout=0.0, attn_dropout=0.0, cond_hiddens=12)
    values.update(overrides)
    return VideoGPT(VideoGPTConfig.for_vqvae(vqvae.config, **values), vqvae)


def lightning_count(n: int) -> str:
    """A parameter count as PyTorch Lightning's model summary prints it (the seed's table)."""
    labels = ["", "K", "M", "B", "T"]
    digits = len(str(n))
    groups = min(math.ceil(digits / 3), len(labels))
    value = n * 10 ** (-3 * (groups - 1))
    if groups == 1 or value >= 100:
        return f"{int(value):,d} {labels[groups - 1]}".strip()
    return f"{value:,.1f} {labels[groups - 1]}"


class Clips(Dataset):
    def __init__(self, clips: torch.Tensor):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"video": self.clips[i]}


class Pairs(Dataset):
    """Consecutive clips of one long movie per sample: previous = first half, next = second."""

    def __init__(self, movies: torch.Tensor, t: int):
        self.movies, self.t = movies, t

    def __len__(self) -> int:
        return len(self.movies)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        m = self.movies[i]
        return {"previous": m[:, :self.t], "next": m[:, self.t:2 * self.t]}


def train_config(**overrides) -> TrainConfig:
    values = dict(epochs=1, batch_size=4, lr=2e-3, warmup_steps=0, grad_clip=1.0, progress=False, log_every=1,
                  seed=0, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


# ---------------------------------------------------------------------- VQ-VAE shapes and layers
@pytest.mark.parametrize("downsample", [(2, 4, 4), (1, 2, 2), (4, 1, 2)])
def test_vqvae_shapes_with_per_axis_downsampling(downsample):
    model = small_vqvae(downsample=downsample).eval()
    video = torch.rand(2, 1, 8, 16, 16) - 0.5
    latent = tuple(s // d for s, d in zip((8, 16, 16), downsample, strict=True))
    assert model.latent_shape == latent
    codes = model.encode(video)
    assert codes.shape == (2, *latent) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    assert model.embed_codes(codes).shape == (2, 8, *latent)
    assert model.decode_codes(codes).shape == video.shape
    out = model({"video": video})
    assert out["recon"].shape == video.shape and torch.equal(out["codes"], codes)
    # strided convolutions: log2 of the largest factor; an axis already reduced gets stride 1
    strides = [m.conv.stride for m in model.encoder.convs]
    assert len(strides) == int(math.log2(max(downsample)))
    assert tuple(math.prod(s[i] for s in strides) for i in range(3)) == downsample


def test_same_pad_transpose_is_the_adjoint_of_the_convolution():
    torch.manual_seed(0)
    for stride in [(2, 2, 2), (1, 2, 1)]:
        conv = SamePadConv3d(3, 5, 4, stride=stride, bias=False)
        convt = SamePadConvTranspose3d(5, 3, 4, stride=stride, bias=False)
        convt.convt.weight.data.copy_(conv.conv.weight.data)
        x = torch.randn(1, 3, 4, 8, 6)
        y = torch.randn(1, 5, *(n // s for n, s in zip(x.shape[2:], stride, strict=True)))
        assert conv(x).shape == y.shape and convt(y).shape == x.shape
        assert torch.allclose((conv(x) * y).sum(), (x * convt(y)).sum(), rtol=1e-4, atol=1e-4)


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="powers of two"):
        VQVAEConfig(downsample=(3, 2, 2), input_shape=(12, 16, 16))
    with pytest.raises(ConfigError, match="not divisible"):
        VQVAEConfig(input_shape=(16, 30, 32))
    with pytest.raises(ConfigError, match="heads"):
        VQVAEConfig(n_hiddens=10, heads=3)
    model = small_vqvae()
    with pytest.raises(InputError, match="video of shape"):
        model.encode(torch.zeros(1, 1, 8, 16, 12))
    with pytest.raises(InputError, match="codes of shape"):
        model.decode_codes(torch.zeros(1, 4, 4, 2, dtype=torch.long))
    with pytest.raises(InputError, match="outside"):
        model.decode_codes(torch.full((1, 4, 4, 4), 16))
    with pytest.raises(ConfigError, match="differ from the VQ-VAE"):
        VideoGPT(VideoGPTConfig(code_shape=(1, 2, 3), n_codes=16, embedding_dim=8, hidden_dim=24, heads=2,
                                cond_hiddens=12), model)
    with pytest.raises(InputError, match="unknown preset"):
        vq.get_preset("nope")
    with pytest.raises(ConfigError, match="unknown option"):
        gpt.get_preset("videogpt-tiny", code_shape=(1, 1, 1))


# ---------------------------------------------------------------------- parameter counts
def test_seed_004_counts_match_the_seed_table():
    counts = vq.preset_parameters("seed-004")
    assert counts == {"encoder": 18_660_240, "decoder": 17_104_563, "pre_vq_conv": 30_848,
                      "post_vq_conv": 30_960, "codebook": 0, "pos_embd": 1_600}
    # the seed's VQ-VAE table, as Lightning prints it
    shown = {k: lightning_count(v) for k, v in counts.items()}
    assert (shown["encoder"], shown["decoder"], shown["pre_vq_conv"], shown["post_vq_conv"]) == (
        "18.7 M", "17.1 M", "30.8 K", "31.0 K")
    assert lightning_count(sum(counts.values())) == "35.8 M"
    without_pos = vq.preset_parameters("seed-004", position_embedding=False)
    assert round(sum(without_pos.values()) * 4 / 1e6, 3) == 143.306  # the seed's "size (MB)"

    g = gpt.preset_parameters("seed-004")
    assert g == {"vqvae": 35_828_211, "resnet": 2_416_800, "cond_pos_embd": 1_600, "fc_in": 73_728,
                 "attn_stack": 37_241_664, "norm": 1_152, "fc_out": 589_824}
    trainable = sum(g.values()) - g["vqvae"]
    assert trainable == 40_324_768
    assert [lightning_count(g[k]) for k in ("resnet", "fc_in", "attn_stack", "fc_out")] == [
        "2.4 M", "73.7 K", "37.2 M", "589 K"]
    assert (lightning_count(trainable), lightning_count(sum(g.values()))) == ("40.3 M", "76.2 M")
    g0 = gpt.preset_parameters("seed-004", vqvae_overrides={"position_embedding": False})
    assert round(sum(g0.values()) * 4 / 1e6, 3) == 304.606
    # the stack is 8 blocks of 4,654,656 + start token + 192 (t' + h' + w'): a 4 x 32 x 32 grid
    # would give 37,250,880, which the seed's table would print as 37.3 M
    big_grid = gpt.preset_parameters("seed-004", vqvae_overrides={"input_shape": (16, 512, 512)})
    assert big_grid["attn_stack"] == 37_250_880 == 8 * 4_654_656 + 576 + 192 * 68
    assert lightning_count(big_grid["attn_stack"]) == "37.3 M"


def test_parameter_tables_and_codebook_without_parameters():
    text = gpt.parameter_table("seed-004")
    assert "attn_stack" in text and "40,324,768" in text and "35,828,211" in text
    assert "18,660,240" in vq.parameter_table("seed-004")
    model = gpt.build("videogpt-tiny")
    assert list(model.vqvae.codebook.parameters()) == []
    assert {n for n, _ in model.vqvae.codebook.named_buffers()} == {
        "embeddings", "cluster_size", "embedding_sum", "initialized"}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts = gpt.preset_parameters("videogpt-tiny")
    assert trainable == sum(counts.values()) - counts["vqvae"]
    assert counts["vqvae"] == sum(vq.preset_parameters("vqvae-tiny").values())


# ---------------------------------------------------------------------- codebook
def test_ema_update_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    k, d, decay, eps = 4, 3, 0.9, 1e-5
    book = Codebook(k, d, decay=decay, epsilon=eps, restart_threshold=0.0)
    e0 = rng.normal(size=(k, d)).astype(np.float32)
    n0 = np.array([3.0, 0.5, 2.0, 1.0], np.float32)
    s0 = (e0 * n0[:, None]).astype(np.float32)
    book.embeddings.copy_(torch.from_numpy(e0))
    book.cluster_size.copy_(torch.from_numpy(n0))
    book.embedding_sum.copy_(torch.from_numpy(s0))
    book.initialized.fill_(1)
    z = rng.normal(size=(2, d, 1, 2, 3)).astype(np.float32)
    book.train()
    out = book(torch.from_numpy(z))

    flat = np.moveaxis(z, 1, -1).reshape(-1, d).astype(np.float64)
    codes = ((flat[:, None, :] - e0[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    n = np.bincount(codes, minlength=k)
    s = np.zeros((k, d))
    np.add.at(s, codes, flat)
    n1 = decay * n0 + (1 - decay) * n
    s1 = decay * s0 + (1 - decay) * s
    smoothed = (n1 + eps) / (n1.sum() + k * eps) * n1.sum()
    np.testing.assert_array_equal(out["codes"].numpy().reshape(-1), codes)
    np.testing.assert_allclose(out["counts"].numpy(), n)
    np.testing.assert_allclose(book.cluster_size.numpy(), n1, rtol=1e-6)
    np.testing.assert_allclose(book.embedding_sum.numpy(), s1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(book.embeddings.numpy(), s1 / smoothed[:, None], rtol=1e-5, atol=1e-6)
    # straight-through: the quantised values are the old codes, the gradient is the identity
    np.testing.assert_allclose(np.moveaxis(out["quantized"].detach().numpy(), 1, -1).reshape(-1, d), e0[codes],
                               rtol=1e-6, atol=1e-6)
    zt = torch.from_numpy(z).requires_grad_(True)
    (book.eval()(zt)["quantized"] * 3.0).sum().backward()
    assert torch.equal(zt.grad, torch.full_like(zt, 3.0))
    assert out["perplexity"].item() == pytest.approx(math.exp(-sum(p * math.log(p) for p in n[n > 0] / n.sum())))
    # evaluation mode leaves the buffers alone
    before = {k_: b.clone() for k_, b in book.named_buffers()}
    book.eval()
    book(torch.from_numpy(z))
    assert all(torch.equal(before[k_], b) for k_, b in book.named_buffers())


def test_dead_codes_restart_from_encoder_outputs():
    book = Codebook(4, 2, decay=0.99, restart_threshold=1.0)
    book.embeddings.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [60.0, 60.0]]))
    book.cluster_size.fill_(5.0)
    book.cluster_size[3] = 0.5  # below the threshold: restarted whatever happens
    book.embedding_sum.copy_(book.embeddings * 5.0)
    book.initialized.fill_(1)
    z = torch.tensor([[0.1, 0.0], [0.9, 1.1], [0.0, 0.2], [1.0, 0.8]]).T.reshape(1, 2, 1, 2, 2)
    book.train()
    book(z)
    inputs = z.movedim(1, -1).reshape(-1, 2)
    restarted = book.embeddings[3]
    assert ((inputs - restarted).abs().sum(1) < 1e-6).any()  # one of the batch's vectors
    assert book.cluster_size[3] == 1.0 and torch.equal(book.embedding_sum[3], restarted)
    assert book.cluster_size[2] > 1.0  # unused but above the threshold: kept
    assert torch.allclose(book.embeddings[2], torch.tensor([50.0, 50.0]), atol=1e-3)


def test_a_collapsed_codebook_revives():
    torch.manual_seed(0)
    k, d = 32, 8
    book = Codebook(k, d)
    book.embeddings.copy_(torch.ones(k, d))  # every code the same vector
    book.embedding_sum.copy_(book.embeddings)
    book.cluster_size.fill_(1.0)
    book.initialized.fill_(1)
    centres = torch.randn(64, d) * 3

    def batch() -> torch.Tensor:
        flat = centres[torch.randint(0, 64, (512,))] + 0.1 * torch.randn(512, d)
        return flat.T.reshape(1, d, 8, 8, 8)

    book.eval()
    assert book(batch())["usage"].item() == pytest.approx(1 / k)
    book.train()
    for _ in range(20):
        book(batch())
    book.eval()
    assert book(batch())["usage"].item() >= 0.5


def test_a_collapsed_vqvae_codebook_revives_while_training():
    torch.manual_seed(0)
    model = small_vqvae(n_codes=32)
    book = model.codebook
    book.embeddings.zero_()
    book.embedding_sum.zero_()
    book.cluster_size.fill_(1.0)
    book.initialized.fill_(1)
    data = moving_blobs(16, t=8, h=16, w=16)
    model.eval()
    with torch.no_grad():
        assert model(data)["usage"].item() == pytest.approx(1 / 32)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for i in range(25):
        out = model.training_step({"video": data[(i % 4) * 4:(i % 4) * 4 + 4]})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert model(data)["usage"].item() >= 0.5


def test_codebook_collectives_under_torch_distributed(tmp_path, monkeypatch):
    calls = []
    reduce, broadcast = dist.all_reduce, dist.broadcast
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (calls.append("all_reduce"), reduce(t, *a, **k))[1])
    monkeypatch.setattr(dist, "broadcast", lambda t, *a, **k: (calls.append("broadcast"), broadcast(t, *a, **k))[1])
    z = torch.randn(2, 4, 2, 2, 2)
    torch.manual_seed(0)
    reference = Codebook(8, 4).train()
    reference(z)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        book = Codebook(8, 4).train()
        book(z)
    finally:
        dist.destroy_process_group()
    assert calls.count("all_reduce") == 2 and "broadcast" in calls  # counts, sums; init / restart draws
    for (name, a), b in zip(book.named_buffers(), reference.buffers(), strict=True):
        assert torch.allclose(a.float(), b.float()), name


# ---------------------------------------------------------------------- VQ-VAE training
def test_a_tiny_vqvae_learns_to_reconstruct():
    torch.manual_seed(0)
    model = small_vqvae(n_hiddens=24, embedding_dim=16, n_codes=32, downsample=(2, 2, 2))
    data = moving_blobs(8, t=8, h=16, w=16)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    losses = []
    for _ in range(30):
        out = model.training_step({"video": data})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    assert set(out) == {"loss", "recon_loss", "commitment_loss", "perplexity", "usage"}
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_vqvae_trains_under_the_engine(tmp_path):
    torch.manual_seed(0)
    model = small_vqvae()
    data = moving_blobs(16, t=8, h=16, w=16)
    trainer = Trainer(model, train_config(epochs=4, out_dir=str(tmp_path)), Clips(data[:12]), Clips(data[12:]))
    before = trainer.evaluate()
    history = trainer.fit()
    val = history.val[-1]
    assert {"val_psnr", "val_usage", "val_perplexity", "val_mse", "val_recon_loss"} <= set(val)
    assert val["val_psnr"] == pytest.approx(float(vq.psnr(torch.tensor(val["val_mse"]))), abs=3.0)
    assert 0 < val["val_usage"] <= 1 and 1 <= val["val_perplexity"] <= 16
    assert history.train[-1]["flops_per_s"] > 0
    assert val["val_loss"] < before["val_loss"] and val["val_usage"] > before["val_usage"]
    # per-clip MSE lets PSNR be computed per clip
    out = model.eval().validation_step({"video": data[:3]})
    assert out["mse"].shape == (3,) and out["counts"].shape == (16,)


def test_vqvae_training_step_under_bf16_autocast():
    torch.manual_seed(0)
    model = small_vqvae().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.training_step({"video": moving_blobs(2, t=8, h=16, w=16)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.codebook.embeddings.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = small_vqvae().eval()  # eval: no codebook update between the two passes
    video = moving_blobs(2, t=8, h=16, w=16)
    model(video)["loss"].backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(video)["loss"].backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)
    model = small_gpt()  # no dropout
    batch = {"previous": video, "next": moving_blobs(2, t=8, h=16, w=16, seed=1)}
    torch.nn.init.normal_(model.fc_out.weight, std=0.5)
    model.training_step(batch)["loss"].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model.training_step(batch)["loss"].backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(plain[n], p.grad, atol=1e-6), n


# ---------------------------------------------------------------------- VideoGPT
def test_gpt_is_causal_in_the_next_clip_codes():
    torch.manual_seed(0)
    model = small_gpt().eval()
    torch.nn.init.normal_(model.fc_out.weight, std=0.5)  # zero at init: make logits informative
    k, shape = model.gpt_config.n_codes, model.gpt_config.code_shape
    prev, nxt = torch.randint(0, k, (2, *shape)), torch.randint(0, k, (2, *shape))
    logits = model.logits(nxt, prev).flatten(1, 3)
    for j in (0, 5, 31):
        changed = nxt.clone().flatten(1)
        changed[:, j] = (changed[:, j] + 1) % k
        moved = (model.logits(changed.view_as(nxt), prev).flatten(1, 3) - logits).abs().amax(-1)
        assert moved[:, :j + 1].max() == 0  # logits at positions <= j do not see code j
        if j + 1 < moved.shape[1]:
            assert moved[:, j + 1].min() > 0
    # the previous clip conditions every position
    other = torch.randint(0, k, (2, *shape))
    assert ((model.logits(nxt, other).flatten(1, 3) - logits).abs().amax(-1) > 0).all()


def test_cached_decoding_equals_the_full_forward():
    torch.manual_seed(0)
    model = small_gpt().eval()
    torch.nn.init.normal_(model.fc_out.weight, std=0.5)
    k, shape = model.gpt_config.n_codes, model.gpt_config.code_shape
    prev, nxt = torch.randint(0, k, (2, *shape)), torch.randint(0, k, (2, *shape))
    with torch.no_grad():
        assert torch.allclose(model._incremental_logits(nxt, prev), model.logits(nxt, prev), atol=1e-5)


def test_vqvae_stays_frozen_and_in_eval_mode_while_the_gpt_trains():
    torch.manual_seed(0)
    vqvae = small_vqvae()
    vqvae.train()
    vqvae(moving_blobs(4, t=8, h=16, w=16))  # a trained-looking codebook (initialised)
    model = small_gpt(vqvae)
    model.train()
    assert model.training and not model.vqvae.training
    assert not any(m.training for m in model.vqvae.modules())
    assert not any(p.requires_grad for p in model.vqvae.parameters())
    before = {k: v.clone() for k, v in model.vqvae.state_dict().items()}
    movies = moving_blobs(8, t=16, h=16, w=16)
    trainer = Trainer(model, train_config(), Pairs(movies, 8), Pairs(movies[:4], 8))
    trainer.fit()
    assert model.training and not model.vqvae.training
    after = model.vqvae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.vqvae.parameters())
    assert any(p.grad is not None for p in model.fc_in.parameters())


def test_gpt_cross_entropy_starts_at_log_n_codes_and_falls():
    torch.manual_seed(0)
    model = small_gpt()
    movies = moving_blobs(8, t=16, h=16, w=16)
    batch = Pairs(movies, 8)[0]
    batch = {k: v[None].expand(4, *v.shape) for k, v in batch.items()}
    first = model.training_step(batch)["loss"].item()
    assert first == pytest.approx(math.log(model.gpt_config.n_codes), abs=1e-5)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 3e-3)
    for _ in range(15):
        loss = model.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_gpt_trains_under_the_engine_and_reports_cross_entropy(tmp_path):
    torch.manual_seed(0)
    model = small_gpt()
    movies = moving_blobs(12, t=16, h=16, w=16)
    history = Trainer(model, train_config(epochs=2, out_dir=str(tmp_path)), Pairs(movies[:8], 8),
                      Pairs(movies[8:], 8)).fit()
    val = history.val[-1]["val_cross_entropy"]
    assert 0 < val < math.log(16) and history.train[-1]["flops_per_s"] > 0
    assert history.last_checkpoint is not None
    state = torch.load(history.last_checkpoint, weights_only=True)
    assert state["model_config"]["vqvae"]["n_codes"] == 16
    # precomputed codes give the same loss as the clips
    batch = Pairs(movies, 8)[0]
    batch = {k: v[None] for k, v in batch.items()}
    model.eval()
    codes = {"previous_codes": model.encode(batch["previous"]), "next_codes": model.encode(batch["next"])}
    assert torch.allclose(model.validation_step(batch)["cross_entropy"], model.validation_step(codes)["cross_entropy"])


def test_gpt_training_step_under_bf16_autocast():
    torch.manual_seed(0)
    model = small_gpt().train()
    pair = Pairs(moving_blobs(2, t=16, h=16, w=16), 8)
    batch = {k: torch.stack([pair[0][k], pair[1][k]]) for k in ("previous", "next")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.training_step(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert torch.isfinite(model.attn_stack.blocks[0].attn.qkv.weight.grad).all()


def test_sample_shapes_codes_and_repeatability():
    torch.manual_seed(0)
    model = small_gpt()
    torch.nn.init.normal_(model.fc_out.weight, std=0.5)
    previous = moving_blobs(2, t=8, h=16, w=16)
    codes = model.sample_codes(previous, generator=torch.Generator().manual_seed(1))
    assert codes.shape == (2, *model.gpt_config.code_shape) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < model.gpt_config.n_codes
    again = model.sample_codes(previous, generator=torch.Generator().manual_seed(1))
    assert torch.equal(codes, again) and model.training  # the mode is restored
    greedy = model.sample_codes(previous, temperature=0.0)
    assert torch.equal(greedy, model.sample_codes(previous, temperature=0.0))
    video = model.sample(previous, generator=torch.Generator().manual_seed(1))
    assert video.shape == previous.shape and video.abs().max() <= 0.5
    with pytest.raises(InputError, match="temperature"):
        model.sample_codes(previous, temperature=-1.0)
    with pytest.raises(InputError, match="no previous clip"):
        model.sample_codes()


def test_hidden_states_and_named_blocks_for_hooks():
    torch.manual_seed(0)
    model = small_gpt().eval()
    previous, nxt = moving_blobs(2, t=8, h=16, w=16), moving_blobs(2, t=8, h=16, w=16, seed=1)
    seen = {}
    names = [f"attn_stack.blocks.{i}" for i in range(model.gpt_config.layers)]
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, a, out, n=n: seen.__setitem__(n, out)) for n in names]
    with torch.no_grad():
        hidden = model.hidden_states(previous, nxt)
    for h in hooks:
        h.remove()
    assert len(hidden) == model.gpt_config.layers
    assert hidden[0].shape == (2, *model.gpt_config.code_shape, model.gpt_config.hidden_dim)
    for n, h in zip(names, hidden, strict=True):
        assert torch.equal(seen[n].view_as(h), h)


def test_unconditional_gpt():
    torch.manual_seed(0)
    model = small_gpt(conditioning=False)
    assert model.resnet is None and model.attn_stack.blocks[0].cross is None
    batch = {"next": moving_blobs(2, t=8, h=16, w=16)}
    loss = model.training_step(batch)["loss"]
    loss.backward()
    assert loss.item() == pytest.approx(math.log(16), abs=1e-5)
    assert model.sample_codes(n=3).shape == (3, *model.gpt_config.code_shape)
    with pytest.raises(InputError, match="n >= 1"):
        model.sample_codes()


def test_tiny_presets_build_and_step():
    model = gpt.build("videogpt-tiny")
    assert model.vqvae.config == vq.get_preset("vqvae-tiny")
    c = model.vqvae.config
    batch = {"previous": torch.rand(2, c.in_channels, *c.input_shape) - 0.5,
             "next": torch.rand(2, c.in_channels, *c.input_shape) - 0.5}
    model.training_step(batch)["loss"].backward()
    assert model.flops_per_sample() > model.vqvae.flops_per_sample() / 3 > 0


# ---------------------------------------------------------------------- exact resume
class _Crash(RuntimeError):
    pass


def _crash_at(step: int):
    def callback(trainer) -> None:
        if trainer.step == step:
            raise _Crash

    return callback


@pytest.mark.parametrize("stage", ["vqvae", "gpt"])
def test_training_resumes_exactly_codebook_and_restarts_included(stage, tmp_path):
    """A run that dies after a checkpoint and resumes ends with the uninterrupted run's
    weights and codebook buffers, bit for bit (restarts draw from the restored RNG)."""
    torch.set_num_threads(1)
    clips = moving_blobs(24, t=8, h=16, w=16, seed=5)
    if stage == "vqvae":
        make = lambda: small_vqvae(restart_threshold=2.0)  # noqa: E731 (restarts happen)
        data = Clips(clips)
    else:
        frozen = small_vqvae()
        make = lambda: small_gpt(frozen, dropout=0.1)  # noqa: E731 (dropout RNG matters)
        data = Pairs(torch.cat([clips, clips.flip(2)], 2), 8)
    cfg = dict(epochs=2, batch_size=4, checkpoint_every_steps=4)
    torch.manual_seed(0)
    a = make()
    Trainer(a, train_config(out_dir=str(tmp_path / "a"), **cfg), data).fit()
    torch.manual_seed(0)
    b = make()
    with pytest.raises(_Crash):
        Trainer(b, train_config(out_dir=str(tmp_path / "b"), **cfg), data,
                callbacks=[_crash_at(6)]).fit()
    torch.manual_seed(1)
    c = make()  # weights and buffers come from the checkpoint
    Trainer(c, train_config(out_dir=str(tmp_path / "b"), **cfg), data).fit(resume=True)
    sa, sc = a.state_dict(), c.state_dict()
    assert sa.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k
