"""Tests of ``archs/metaformer.py``: every registered classification network runs and trains at odd sizes, the
generic ``metaformer`` hosts every registered mixer, configs and overrides are checked, vHeat shares one frequency
embedding per stage, and the parameter/MAC counts match the official models at 224."""

from __future__ import annotations

import functools

import pytest
import torch

from archs.metaformer import MetaFormer, MetaFormerConfig, stage_sizes
from operators.hco import FrequencyEmbedding, HeatConduction
from operators.hyena_pixel import HyenaPixelMixer
from sandbox import build_arch, count_macs, count_params, list_archs, list_mixers
from sandbox.errors import OptionError, UnknownNameError

CLASSIFIERS = list_archs(family="classification")
TINY = {"depths": (1, 1, 1, 1), "dims": (16, 32, 48, 64), "num_classes": 10}


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=None)
def _default(name: str) -> MetaFormer:
    """A default-config network, built once per session (building the big ones takes seconds)."""
    torch.manual_seed(0)
    return build_arch(name)


def _assert_all_grads(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"


# ------------------------------------------------------------------------------------------- registered networks
def test_registered_configurations():
    expected = {
        "vheat_tiny",
        "vheat_small",
        "vheat_base",
        "hpxformer_s18",
        "hbformer_s18",
        "chpxformer_s18",
        "convformer_s18",
        "caformer_s18",
        "fvnet_nano",
        "fvnet_tiny",
        "fvnet_small",
        "metaformer",
    }
    assert expected <= set(CLASSIFIERS), sorted(expected - set(CLASSIFIERS))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_network_runs_and_trains_at_odd_sizes(name):
    """Logits of the right shape at odd sizes, and every parameter gets a (finite) gradient."""
    torch.manual_seed(0)
    model = build_arch(name, num_classes=10, drop_path_rate=0.0)
    assert isinstance(model, MetaFormer) and model.in_chans == 3 and model.num_classes == 10
    model.train()
    x = _randn(1, 3, 65, 47, seed=1)
    y = model(x)
    assert y.shape == (1, 10), f"expected logits (1, 10), got {tuple(y.shape)}"
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    _assert_all_grads(model)
    model.eval()
    with torch.no_grad():
        y = model(_randn(2, 3, 33, 40, seed=2))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_forward_features_and_head():
    model = build_arch("metaformer", **TINY)
    feats = model.forward_features(_randn(2, 3, 64, 48))
    assert feats.shape == (2, 64, 2, 2), tuple(feats.shape)
    assert model.forward_head(feats).shape == (2, 10)
    assert model.num_features == 64


# ----------------------------------------------------------------------------------------------- generic skeleton
@pytest.mark.parametrize("mixer", list_mixers())
def test_generic_metaformer_hosts_every_mixer(mixer):
    torch.manual_seed(0)
    model = build_arch("metaformer", mixer=mixer, **TINY)
    y = model(_randn(1, 3, 64, 48, seed=3))
    assert y.shape == (1, 10) and torch.isfinite(y).all()
    y.square().sum().backward()
    _assert_all_grads(model)


@pytest.mark.parametrize(
    "block,stem,downsample,head", [("vheat", "vheat", "vheat", "vheat"), ("metaformer",) * 3 + ("mlp",)]
)
@pytest.mark.parametrize("post_norm", [False, True])
def test_generic_metaformer_options(block, stem, downsample, head, post_norm):
    torch.manual_seed(0)
    model = build_arch(
        "metaformer",
        mixer="conv",
        block=block,
        stem=stem,
        downsample=downsample,
        head=head,
        post_norm=post_norm,
        layer_scale=1e-5,
        res_scale=[None, 1.0, 1.0, 1.0],
        in_chans=1,
        drop_path_rate=0.1,
        head_dropout=0.1,
        **TINY,
    )
    y = model(_randn(2, 1, 37, 45))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.sum().backward()
    _assert_all_grads(model)


def test_per_stage_and_per_block_mixers():
    model = build_arch(
        "metaformer",
        mixers=["conv", "sepconv:kernel_size=3", ["pool", {"name": "identity"}], "attention_global"],
        depths=(1, 1, 2, 1),
        dims=(8, 16, 24, 32),
    )
    names = [[type(b.token_mixer).__name__ for b in stage.blocks] for stage in model.stages]
    kinds = [[n.lower() for n in stage] for stage in names]
    assert "conv" in kinds[0][0] and "sepconv" in kinds[1][0] and "pool" in kinds[2][0]
    assert "identity" in kinds[2][1] and "attention" in kinds[3][0], names
    assert model.stages[1].blocks[0].token_mixer.dwconv.kernel_size == (3, 3)
    assert model(_randn(1, 3, 40, 32)).shape == (1, 1000)
    # the same from a one-line spec (what the command line and YAML give)
    spec = "metaformer:mixers=['pool','sepconv','pool','pool'],depths=[1,1,1,1],dims=[8,16,24,32],num_classes=5"
    model = build_arch(spec)
    assert model(_randn(1, 3, 32, 32)).shape == (1, 5)
    rebuilt = build_arch(model.arch_spec)  # the spec stored on the model rebuilds it
    rebuilt.load_state_dict(model.state_dict())


def test_metaformer_init():
    """MetaFormer init: trunc_normal(0.02) on Conv2d/Linear weights and zero biases; vHeat keeps conv defaults."""
    torch.manual_seed(0)
    model = build_arch("metaformer", mixer="conv", **TINY)
    stem = model.stem[0]
    assert stem.weight.std().item() < 0.03 and stem.bias.abs().max() == 0
    vheat = build_arch("metaformer", mixer="conv", block="vheat", stem="vheat", downsample="vheat", **TINY)
    assert vheat.stem[0].weight.std().item() > 0.05  # PyTorch default (kaiming uniform), not 0.02
    assert vheat.head.fc.weight.std().item() < 0.03
    own = build_arch("metaformer", mixer="mpfb", init_mixers=False, **TINY)
    gate = own.stages[0].blocks[0].token_mixer.units[0].gate
    assert gate.bias.abs().min() > 0.1  # the mixer's own init (softplus(bias) = 1) survives


# ------------------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "spec,overrides,match",
    [
        ("metaformer:embdim=64", {}, "embdim"),
        ("vheat_tiny", {"depth": (1, 1, 1, 1)}, "did you mean 'depths'"),
        ("metaformer", {"block": "vhet"}, "block='vhet'"),
        ("metaformer", {"head": "pool"}, "head='pool'"),
        ("metaformer", {"depths": "deep"}, "depths"),
        ("metaformer", {"dims": (8, 16, 24)}, "dims"),
        ("metaformer", {"mixers": ["pool", "conv"]}, "mixers="),
        ("metaformer", {"mixers": ["pool", "pool", ["pool"], "pool"]}, "stage 3"),
        ("metaformer", {"res_scale": [1.0, 1.0]}, "res_scale"),
        ("metaformer", {"mixer": "pool", "mixers": "conv"}, "not both"),
        ("metaformer", {"mixer": "hco:k_mod=fixed"}, "k_mod"),
        ("metaformer", {"drop_path_rate": 1.5}, "drop_path_rate"),
    ],
)
def test_bad_options_are_one_line_option_errors(spec, overrides, match):
    with pytest.raises(OptionError, match=match) as info:
        build_arch(spec, **overrides)
    assert "\n" not in str(info.value)


def test_unknown_mixer_is_a_one_line_error_with_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'hyena_pixel'") as info:
        build_arch("metaformer", mixer="hyena_pixl")
    assert "\n" not in str(info.value)


def test_wrong_input_channels():
    model = build_arch("metaformer", in_chans=1, **TINY)
    with pytest.raises(OptionError, match=r"expected input \(B, 1, H, W\)"):
        model(_randn(1, 3, 32, 32))


# --------------------------------------------------------------------------------------------------- vHeat, FVE
def test_vheat_shares_one_frequency_embedding_per_stage():
    model = _default("vheat_tiny")
    embeds = [m for m in model.modules() if isinstance(m, FrequencyEmbedding)]
    assert len(embeds) == 4, f"expected 4 frequency embeddings (one per stage), found {len(embeds)}"
    for i, (stage, size, dim) in enumerate(zip(model.stages, (56, 28, 14, 7), (96, 192, 384, 768))):
        assert stage.freq_embed.weight.shape == (size, size, dim)
        layers = [m for m in stage.modules() if isinstance(m, HeatConduction)]
        assert len(layers) == len(stage.blocks)
        for layer in layers:
            assert layer.k_mode == "predicted_shared"
            assert layer.__dict__["_shared_embed"] is stage.freq_embed, f"stage {i + 1}: an hco uses another FVE"
    keys = [k for k in model.state_dict() if "freq_embed" in k]
    assert keys == [f"stages.{i}.freq_embed.weight" for i in range(4)], keys


def test_vheat_fve_sizes_follow_img_size():
    cfg = MetaFormerConfig(stem="vheat", img_size=384)
    assert stage_sizes(cfg) == [96, 48, 24, 12]
    assert stage_sizes(MetaFormerConfig()) == [56, 28, 14, 7]  # MetaFormer stem
    model = build_arch("vheat_tiny", img_size=128, depths=(1, 1, 1, 1), num_classes=10)
    assert [s.freq_embed.weight.shape[0] for s in model.stages] == [32, 16, 8, 4]


def test_inference_reuses_the_decay_until_parameters_change():
    """Eval + no_grad computes k once per size (as vHeat's infer_mode); an update invalidates it."""
    torch.manual_seed(0)
    model = build_arch("metaformer", mixer="hco:k_mode=predicted_shared", **TINY).eval()
    x = _randn(1, 3, 48, 40)
    with torch.no_grad():
        first = model(x)
        assert torch.equal(model(x), first)
    assert torch.allclose(model(x), first, atol=1e-5)  # the gradient path agrees
    with torch.no_grad():
        model.stages[0].freq_embed.weight.add_(1.0)
        changed = model(x)
    model.train()
    torch.testing.assert_close(model.eval()(x), changed)  # with grad enabled: recomputed, same values
    assert not torch.allclose(changed, first)


# -------------------------------------------------------------------------------------------------- HyenaPixel
def test_hpxformer_filter_sizes_follow_img_size():
    for img_size, ks in ((224, (111, 55, 27, 13)), (384, (191, 95, 47, 23))):
        model = build_arch("hpxformer_s18", img_size=img_size, depths=(1, 1, 1, 1), num_classes=10)
        mixers = [stage.blocks[0].token_mixer for stage in model.stages]
        assert all(isinstance(m, HyenaPixelMixer) and m.long_conv.learned_pos for m in mixers)
        assert tuple(m.long_conv.filter_size for m in mixers) == ks
        assert tuple(m.long_conv.z.shape[1] for m in mixers) == (32, 32, 48, 64)
    chpx = build_arch("chpxformer_s18", depths=(1, 1, 1, 1), num_classes=10)
    assert [getattr(s.blocks[0].token_mixer, "long_conv", None) is None for s in chpx.stages] == [
        True,
        True,
        False,
        False,
    ]
    assert chpx.stages[2].blocks[0].token_mixer.long_conv.filter_size == 27
    assert not chpx.stages[3].blocks[0].token_mixer.use_layernorm


# ------------------------------------------------------------------------------------------------ params and MACs
# (params, MACs at 1 x 3 x 224 x 224, tolerance); params measured from the official module definitions, MACs from
# the papers/READMEs. FVNet has no code: the paper's totals, within 15%.
OFFICIAL = {
    "vheat_tiny": (30.85e6, 4.6e9, 0.05),
    "hpxformer_s18": (29.34e6, 4.9e9, 0.05),
    "convformer_s18": (26.77e6, 3.9e9, 0.05),
    "caformer_s18": (26.34e6, 4.1e9, 0.05),
    "fvnet_tiny": (3.1e6, 0.4e9, 0.15),
}


def _hpx_distance_map_elements(model: MetaFormer) -> int:
    """The official HyenaPixel stores a frozen K x K distance map Parameter per layer; ours derives it."""
    return sum(m.long_conv.filter_size**2 for m in model.modules() if isinstance(m, HyenaPixelMixer))


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_params_and_macs_match_the_official_models(name):
    params, macs, tol = OFFICIAL[name]
    model = _default(name)
    ours = count_params(model)
    # vHeat's FLOPs are measured in its infer_mode, where k = ReLU(to_k(FVE)) is precomputed (an input-free term):
    # count_macs warms up first, and ours caches k in inference after that first pass. The official HyenaPixel
    # generates its filter in every forward (no cache), and its published count includes that: count a cold pass.
    ours_macs = count_macs(model, (1, 3, 224, 224), warm=not name.startswith("hpx"))
    assert abs(ours / params - 1) < tol, f"{name}: {ours / 1e6:.2f}M params, official {params / 1e6:.2f}M"
    assert abs(ours_macs / macs - 1) < tol, f"{name}: {ours_macs / 1e9:.3f}G MACs, official {macs / 1e9:.2f}G"
    if name == "hpxformer_s18":  # the only difference is the official frozen distance maps (~53k elements)
        with_maps = ours + _hpx_distance_map_elements(model)
        assert abs(with_maps / params - 1) < 1e-3, f"{with_maps / 1e6:.3f}M with distance maps"
    if name in ("vheat_tiny", "convformer_s18", "caformer_s18"):  # same structure: same count to rounding
        assert abs(ours / params - 1) < 1e-3, f"{name}: {ours / 1e6:.3f}M params, official {params / 1e6:.2f}M"
