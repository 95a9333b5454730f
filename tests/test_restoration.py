"""Restoration networks: SwinIR equivalence with BasicSR, presets, any mixer, padding, tiling, checkpoints."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from archs.restoration import RestorationNet, blend_window, self_ensemble, tiled_forward
from sandbox import SandboxError, build_arch, list_archs, list_mixers, load_checkpoint
from sandbox.errors import OptionError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def basicsr_swinir(**kw):
    from sandbox.compat.basicsr import ARCH_REGISTRY  # torchvision shim, then basicsr (from the test extra)

    return ARCH_REGISTRY.get("SwinIR")(upscale=1, upsampler="", resi_connection="1conv", **kw)


def reference_output(ref, x, window):
    """BasicSR's SwinIRModel.test protocol: reflect-pad to the window multiple, run, crop."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, (-w) % window, 0, (-h) % window), mode="reflect")
    return ref(xp)[..., :h, :w]


@pytest.mark.parametrize(
    "in_chans,window,img_range,embed,depths,heads",
    [(3, 8, 1.0, 36, (2, 2), 2), (1, 7, 255.0, 24, (2, 2, 2), 3)],
    ids=["color_dn_w8", "gray_jpeg_w7"],
)
def test_swinir_matches_basicsr(in_chans, window, img_range, embed, depths, heads):
    torch.manual_seed(0)
    ref = basicsr_swinir(
        in_chans=in_chans,
        img_size=8 * window,
        window_size=window,
        img_range=img_range,
        depths=list(depths),
        embed_dim=embed,
        num_heads=[heads] * len(depths),
        mlp_ratio=2.0,
    ).eval()
    with torch.no_grad():  # random weights everywhere, not just the init (LayerNorms, biases, bias tables)
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = build_arch(
        "swinir", preset="tiny", task="jpeg" if window == 7 else "denoise", in_chans=in_chans,
        embed_dim=embed, depths=depths, num_heads=heads,
    ).eval()  # fmt: skip
    assert ours.cfg.window_size == window and ours.img_range == img_range
    load_checkpoint(ours, {"params": ref.state_dict()})  # official layout: attn_mask / relative_position_index dropped
    for h, w in [(64, 64), (67, 45)]:
        x = torch.rand(2, in_chans, h, w)
        with torch.no_grad():
            want = reference_output(ref, x, window)
            got = ours(x)
        assert got.shape == x.shape
        diff = (got - want).abs().max().item()
        assert diff <= 1e-5, f"{h}x{w}: max abs difference {diff:.2e} > 1e-5"


def test_swinir_paper_preset_has_official_size():
    # measured on the official network_swinir.py (operators reference 2.1): gray_dn 11,497,681; color_dn 11,504,163
    assert sum(p.numel() for p in build_arch("swinir", in_chans=1).parameters()) == 11_497_681
    assert sum(p.numel() for p in build_arch("swinir", in_chans=3).parameters()) == 11_504_163
    jpeg = build_arch("swinir", task="jpeg", in_chans=1)
    assert jpeg.cfg.window_size == 7 and jpeg.img_range == 255.0
    assert sum(p.numel() for p in jpeg.parameters()) == 11_485_585


def test_official_checkpoint_with_other_img_size_buffers_loads(tmp_path):
    """SwinIR #129: an attn_mask built for another img_size breaks strict loading; ours drops the buffers."""
    torch.manual_seed(0)
    ref = basicsr_swinir(in_chans=1, img_size=48, window_size=8, depths=[2], embed_dim=16, num_heads=[2], mlp_ratio=2.0)
    state = ref.state_dict()
    assert any(k.endswith("attn_mask") for k in state) and any(k.endswith("relative_position_index") for k in state)
    path = tmp_path / "004_grayDN_test.pth"
    torch.save({"params": state}, path)
    ours = build_arch("swinir", preset="tiny", in_chans=1, embed_dim=16, depths=(2,), num_heads=2)
    load_checkpoint(ours, path)
    assert torch.equal(ours.conv_first.weight, state["conv_first.weight"])


def test_checkpoint_of_another_network_is_one_line_error(tmp_path):
    a = build_arch("vheatir", preset="tiny", in_chans=1)
    path = tmp_path / "vheat.pth"
    torch.save({"params": a.state_dict()}, path)
    b = build_arch("swinir", preset="tiny", in_chans=1)
    with pytest.raises(SandboxError) as e:
        load_checkpoint(b, path)
    assert "does not match" in str(e.value) and "\n" not in str(e.value)
    c = build_arch("vheatir", preset="tiny", in_chans=3)
    with pytest.raises(SandboxError, match="differ in shape"):
        load_checkpoint(c, path)


def test_window_size_change_resizes_bias_table():
    src = build_arch("swinir", preset="tiny", in_chans=1, window_size=8)
    dst = build_arch("swinir", preset="tiny", in_chans=1, window_size=7)
    load_checkpoint(dst, src.state_dict())
    table = dst.layers[0].residual_group.blocks[0].attn.relative_position_bias_table
    assert table.shape == (13 * 13, dst.layers[0].residual_group.blocks[0].attn.num_heads)


# ------------------------------------------------------------------------------------------ every network / mixer
RESTORATION = list_archs(family="restoration")


def _check_net(net, in_chans, sizes=((17, 23), (9, 30))):
    for h, w in sizes:
        x = torch.rand(2, in_chans, h, w)
        y = net(x)
        assert y.shape == x.shape, f"expected {tuple(x.shape)}, got {tuple(y.shape)}"
        assert torch.isfinite(y).all()
    net.zero_grad()
    net(torch.rand(2, in_chans, 19, 21)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"No gradient for {missing[:5]}"


@pytest.mark.parametrize("name", RESTORATION)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_restoration_network_smallest_preset(name, in_chans):
    torch.manual_seed(0)
    net = build_arch(name, preset="tiny", in_chans=in_chans, drop_path_rate=0.1)
    _check_net(net, in_chans)


@pytest.mark.parametrize("mixer", list_mixers())
def test_ir_with_every_mixer(mixer):
    torch.manual_seed(0)
    net = build_arch("ir", mixer=mixer, preset="tiny", in_chans=1)
    _check_net(net, 1, sizes=((17, 23),))


def test_vheatir_shares_one_frequency_embedding_per_group():
    from operators.hco import HeatConduction

    net = build_arch("vheatir", preset="small", in_chans=1)
    embeds = [k for k in net.state_dict() if "freq_embed" in k]
    assert embeds == [f"layers.{g}.freq_embed.weight" for g in range(len(net.layers))]
    for group in net.layers:
        layers = [m for m in group.modules() if isinstance(m, HeatConduction)]
        assert len(layers) == len(group.residual_group.blocks)
        assert all(m._shared_embed is group.freq_embed for m in layers)


def test_mixer_per_group_and_per_block():
    net = build_arch("ir", preset="tiny", in_chans=1, mixer=["conv:kernel_size=3", ["hco:k_mode=fixed", "pool"]])
    kinds = [type(b.attn).__name__ for b in net.blocks()]
    assert kinds == ["DepthwiseConvMixer", "DepthwiseConvMixer", "HeatConduction", "PoolMixer"]
    with pytest.raises(OptionError, match="group 1 has 1 specs"):
        build_arch("ir", preset="tiny", mixer=["conv", ["pool"]])
    with pytest.raises(OptionError, match="one per residual group"):
        build_arch("ir", preset="tiny", mixer=["conv", "pool", "hco"])


def test_swinir_shifts_alternate_and_pad_to_window():
    net = build_arch("swinir", preset="small", in_chans=1)
    assert [b.attn.shift for b in net.layers[0].residual_group.blocks] == [0, 4, 0, 4]
    assert net.pad_multiple == 8
    assert build_arch("vheatir", preset="tiny").pad_multiple == 1
    y = net(torch.rand(1, 1, 3, 5))  # smaller than a window: replicate-padded
    assert y.shape == (1, 1, 3, 5)


def test_bad_options_are_one_line_errors():
    for spec, match in [
        ("swinir:preset=huge", "preset='huge' is not one of"),
        ("swinir:task=deblur", "task='deblur'"),
        ("ir:embdim=8", "did you mean 'embed_dim'"),
        ("ir:mixer=hco_x", "did you mean 'hco'"),
        ("ir:tile=64,tile_overlap=64", "smaller than tile"),
        ("swnir", "did you mean 'swinir'"),
    ]:
        with pytest.raises(SandboxError, match=match) as e:
            build_arch(spec)
        assert "\n" not in str(e.value)
    with pytest.raises(SandboxError, match=r"expects \(B, 1, H, W\).*gray network given a color"):
        build_arch("ir", preset="tiny", in_chans=1)(torch.rand(1, 3, 8, 8))


def test_arch_spec_rebuilds_the_network():
    net = build_arch("ir:mixer=conv,preset=tiny", in_chans=1)
    assert net.arch_spec == {"name": "ir", "mixer": "conv", "preset": "tiny", "in_chans": 1}
    again = build_arch(net.arch_spec)
    again.load_state_dict(net.state_dict())


# --------------------------------------------------------------------------------------------------------- tiling
def test_blend_window_is_smooth_and_positive_where_needed():
    w = blend_window(200, 64, 64, 32)
    assert w[:8].eq(0).all() and w[-8:].eq(0).all() and w[24:40].eq(1).all()
    assert (w[1:] - w[:-1]).abs().max() < 0.2  # no step
    assert blend_window(200, 0, 64, 32)[:32].eq(1).all()  # image border: full weight
    assert blend_window(64, 0, 64, 32).eq(1).all()


def test_tiled_equals_whole_image_for_local_network():
    torch.manual_seed(0)
    net = build_arch("ir", mixer="conv:kernel_size=3", preset="tiny", in_chans=1).eval()  # receptive radius 9
    x = torch.rand(1, 1, 150, 131)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, tile=64, overlap=48)  # zero-weight margin 12 >= 9
    assert (tiled - full).abs().max() < 1e-5
    net.cfg.tile, net.cfg.tile_overlap = 64, 48  # the network's own tile option
    with torch.no_grad():
        assert (net(x) - full).abs().max() < 1e-5


def test_blended_tiles_beat_uniform_average_on_global_mixer():
    """With a global mixer no tiling is exact; blending must be closer to the whole-image output than SwinIR's
    uniform average, and must not jump at tile borders more than the whole-image output does."""
    torch.manual_seed(0)
    net = build_arch("vheatir", preset="tiny", in_chans=1).eval()
    with torch.no_grad():  # a stronger, non-trivial response than the near-identity init
        for m in net.modules():
            if hasattr(m, "to_k"):
                m.to_k[0].bias.fill_(2.0)
        x = torch.rand(1, 1, 96, 96)
        full = net(x)
        cos = tiled_forward(net, x, tile=48, overlap=16)
        uni = tiled_forward(net, x, tile=48, overlap=16, blend="uniform")
    err_cos, err_uni = (cos - full).abs().mean().item(), (uni - full).abs().mean().item()
    assert err_cos < err_uni, f"blended error {err_cos:.2e} not below uniform {err_uni:.2e}"


def test_self_ensemble_is_the_mean_over_the_eight_dihedral_transforms():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)  # not equivariant: each transform gives another output
    x = torch.rand(2, 1, 10, 7)  # non-square: odd rotations see (7, 10)
    with torch.no_grad():
        got = self_ensemble(conv, x)
        views = []
        for t in range(8):  # the same transforms, written out with transposes instead of rot90
            xt = x.flip(-1) if t >= 4 else x
            k = t % 4
            xt = {0: xt, 1: xt.transpose(-2, -1).flip(-2), 2: xt.flip(-2, -1), 3: xt.transpose(-2, -1).flip(-1)}[k]
            y = conv(xt)
            y = {0: y, 1: y.flip(-2).transpose(-2, -1), 2: y.flip(-2, -1), 3: y.flip(-1).transpose(-2, -1)}[k]
            views.append(y.flip(-1) if t >= 4 else y)
        assert got.shape == (2, 2, 10, 7)
        assert torch.allclose(got, torch.stack(views).mean(0), atol=1e-6)
        assert not torch.allclose(views[0], views[1], atol=1e-3)  # the transforms did differ
        symmetric = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        symmetric.weight.copy_(torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])[None, None])
        assert torch.allclose(self_ensemble(symmetric, x), symmetric(x), atol=1e-6)  # equivariant: no change


# ------------------------------------------------------------------------------------------------------- basicsr
def test_basicsr_options_file_builds_ours(tmp_path):
    script = textwrap.dedent(
        """
        import yaml, torch
        import sandbox.compat.basicsr  # noqa
        from basicsr.archs import build_network
        opt = yaml.safe_load('''
        network_g:
          type: VHeatIR
          preset: tiny
          in_chans: 1
          img_size: 64
          upscale: 1
          upsampler: ''
        ''')
        net = build_network(opt['network_g'])
        print(type(net).__module__, type(net).__name__, net.cfg.mixer, tuple(net(torch.rand(1, 1, 13, 11)).shape))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "archs.restoration RestorationNet" in out.stdout and "(1, 1, 13, 11)" in out.stdout
    assert "'predicted_shared'" in out.stdout


def test_compat_shim_is_needed_and_sufficient():
    bare = subprocess.run([sys.executable, "-c", "import basicsr"], capture_output=True, text=True, timeout=300)
    shimmed = subprocess.run(
        [sys.executable, "-c", "import sandbox.compat.basicsr, basicsr.data.degradations"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert shimmed.returncode == 0, shimmed.stderr[-2000:]
    if bare.returncode != 0:  # torchvision >= 0.17 with basicsr 1.4.2: the upstream bug the shim works around
        assert "functional_tensor" in bare.stderr


def test_restoration_net_class_is_one_for_all():
    assert {type(build_arch(n, preset="tiny")) for n in RESTORATION} == {RestorationNet}


@pytest.mark.parametrize("mixer", ["conv", "attention_window", "hco"])
def test_pixel_unshuffle_runs_the_body_at_lower_resolution(mixer):
    torch.manual_seed(0)
    net = build_arch("ir", in_chans=1, mixer=mixer, embed_dim=16, depths=(1,), pixel_unshuffle=2).eval()
    full = build_arch("ir", in_chans=1, mixer=mixer, embed_dim=16, depths=(1,)).eval()
    assert net.pad_multiple == 2 * full.pad_multiple  # the mixers' own multiples hold in the half-size body
    assert net.conv_first.in_channels == 4 and net.conv_last.out_channels == 4
    seen = []
    net.layers[0].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    x = torch.rand(2, 1, 37, 29)
    y = net(x)
    assert y.shape == x.shape
    assert seen[0][-2] == -(-37 // net.pad_multiple) * net.pad_multiple // 2  # tokens: (H / 2) x (W / 2)
    # the shuffle pair is exact: with the body's output zeroed the network is the identity
    with torch.no_grad():
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
    assert torch.allclose(net(x), x, atol=1e-6)
    with pytest.raises(SandboxError, match="pixel_unshuffle=0 is not valid"):
        build_arch("ir", in_chans=1, mixer="conv", embed_dim=8, depths=(1,), pixel_unshuffle=0)
