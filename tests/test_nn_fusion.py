"""cinebrain.nn.fusion: every method, any subset of modalities, weights, seed 000 size."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch

from cinebrain.errors import ConfigError
from cinebrain.nn import FusionConfig, MultimodalCombiner, count_parameters
from cinebrain.nn.fusion import FUSION_METHODS

torch.set_num_threads(1)

DIMS = {"video": 12, "audio": 6, "text": 8}
SUBSETS = [set(c) for r in (1, 2, 3) for c in combinations(DIMS, r)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make(method: str, **kw) -> MultimodalCombiner:
    base = dict(modalities=dict(DIMS), method=method, dim=8, n_heads=2, hidden_dims=(10,))
    return MultimodalCombiner(FusionConfig(**{**base, **kw}))


def inputs(B: int = 3, names=DIMS) -> dict[str, torch.Tensor]:
    return {n: torch.randn(B, DIMS[n]) for n in names}


VARIANTS = [
    dict(method="concat"),
    dict(method="concat", project=True, out_dim=10),
    dict(method="weighted_sum"),
    dict(method="weighted_sum", weights={"video": 2.0, "audio": 1.0, "text": 1.0}),
    dict(method="mlp"),
    dict(method="attention"),
    dict(method="attention", pool="mean", n_layers=2),
    dict(method="cross_attention"),
    dict(method="cross_attention", pool="mean", out_dim=5),
]
IDS = ["-".join(str(v) for v in var.values() if not isinstance(v, dict)) for var in VARIANTS]


def test_seed000_layer4_parameter_count_on_meta_device():
    cfg = FusionConfig(
        modalities={"video": 1024, "audio": 256, "text": 256},
        method="concat",
        project=True,
        norm="batch",
        dropout=0.2,
    )
    with torch.device("meta"):
        fusion = MultimodalCombiner(cfg)
    assert fusion.out_dim == 1536
    assert count_parameters(fusion) == 2_363_904
    for method in FUSION_METHODS:
        with torch.device("meta"):
            m = MultimodalCombiner(FusionConfig(method=method))
        assert all(p.is_meta for p in m.parameters())


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_any_subset_gives_fixed_output_size(variant):
    fusion = make(**variant).eval()
    for subset in SUBSETS:
        y = fusion(inputs(3, subset))
        assert y.shape == (3, fusion.out_dim), subset
        assert torch.isfinite(y).all(), subset


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_output_depends_on_inputs_and_all_parameters_learn(variant):
    fusion = make(**variant).train()
    x = inputs()
    y = fusion(x)
    for name in DIMS:
        x2 = dict(x, **{name: torch.randn(3, DIMS[name])})
        with torch.no_grad():
            assert not torch.allclose(fusion(x2), y), f"output ignores {name}"
    if not list(fusion.parameters()):  # plain concat has nothing to learn
        assert variant == dict(method="concat")
        return
    (y * torch.randn_like(y)).sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_per_sample_presence_equals_dropping_the_modality(variant):
    """A modality marked absent for a sample acts exactly as if it were not given."""
    fusion = make(**variant).eval()
    x = inputs(4)
    present = {"audio": torch.tensor([True, False, True, False])}
    y = fusion(x, present)
    y_without = fusion({k: v for k, v in x.items() if k != "audio"})
    torch.testing.assert_close(y[[1, 3]], y_without[[1, 3]])
    torch.testing.assert_close(y[[0, 2]], fusion(x)[[0, 2]])


def test_concat_fills_zeros_for_absent_modalities():
    fusion = make("concat")
    x = inputs(2, {"video", "text"})
    y = fusion(x)
    assert y.shape == (2, 26)
    torch.testing.assert_close(y[:, 12:18], torch.zeros(2, 6))
    torch.testing.assert_close(y[:, :12], x["video"])


def test_weighted_sum_renormalises_over_present_modalities():
    fusion = make("weighted_sum", weights={"video": 3.0, "audio": 1.0, "text": 0.0}).eval()
    x = inputs(2)
    h = {n: fusion.proj[n](x[n]) for n in DIMS}
    torch.testing.assert_close(fusion(x), 0.75 * h["video"] + 0.25 * h["audio"])
    torch.testing.assert_close(fusion({"audio": x["audio"], "text": x["text"]}), h["audio"])
    assert fusion.modality_weights() == pytest.approx({"video": 0.75, "audio": 0.25, "text": 0.0})

    learned = make("weighted_sum").eval()
    with torch.no_grad():
        learned.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    w = torch.tensor([0.0, 1.0, 2.0]).softmax(0)
    assert list(learned.modality_weights().values()) == pytest.approx(w.tolist())
    only_video = learned({"video": x["video"]})
    torch.testing.assert_close(only_video, learned.proj["video"](x["video"]))


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_modality_weights_sum_to_one(variant):
    fusion = make(**variant)
    fusion(inputs())
    w = fusion.modality_weights()
    assert list(w) == list(DIMS)
    assert sum(w.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in w.values())


def test_attention_pool_weights_ignore_absent_modalities():
    fusion = make("attention").eval()
    fusion({"video": torch.randn(3, 12), "text": torch.randn(3, 8)})
    assert fusion.modality_weights()["audio"] == 0.0


def test_cross_attention_each_modality_sees_only_the_others():
    """With two modalities, each token's attention output comes only from the other one."""
    fusion = make("cross_attention", pool="mean").eval()
    block = fusion.transformer.blocks[0]
    seen = {}
    block.attn.register_forward_hook(lambda m, i, o: seen.update(out=o))
    x = inputs(2, {"video", "audio"})
    fusion(x)
    out1 = seen["out"]
    fusion({"video": torch.randn(2, 12), "audio": x["audio"]})
    # the audio token's attention output depends on the video only: it changed ...
    assert not torch.allclose(seen["out"][:, 1], out1[:, 1])
    # ... while the video token's did not (it attends to audio alone, which is unchanged)
    torch.testing.assert_close(seen["out"][:, 0], out1[:, 0])


def test_bad_inputs_and_configs():
    fusion = make("attention")
    with pytest.raises(ValueError, match="unknown"):
        fusion({"smell": torch.randn(2, 3)})
    with pytest.raises(ValueError, match="expected"):
        fusion({"video": torch.randn(2, 5)})
    with pytest.raises(ValueError, match="no modality"):
        fusion({})
    with pytest.raises(ConfigError, match="method"):
        FusionConfig(method="sum")
    with pytest.raises(ConfigError, match="project"):
        FusionConfig(method="concat", out_dim=7)
    with pytest.raises(ConfigError, match="weights"):
        FusionConfig(method="weighted_sum", weights={"smell": 1.0})
