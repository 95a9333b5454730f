"""Mixer hooks (sandbox.registry.register_mixer): a plugin mixer that declares ``block_defaults``, ``pad_multiple``
and ``share_across_stage`` gets per-block options, input padding and stage-shared parameters from the networks
exactly as the built-ins attention_window (window, shift, padding) and hco (``freq_embed``) do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sandbox import MIXERS, SandboxError, build_arch, register_mixer
from sandbox.registry import mixer_block_defaults, mixer_pad_multiple, stage_shared_modules

KEY = "hooks_test_mixer"


class SharedScale(nn.Module):
    """A per-channel scale owned by a stage and used by every hooked mixer in it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))


class HookedMixer(nn.Module):
    """1x1 conv times a stage-shared scale. (B, C, H, W) -> (B, C, H, W)."""

    sizes_seen: list[int] = []  # the size each share_across_stage call was given

    def __init__(self, dim: int, window: int = 2, phase: int = 0, shared: bool = True) -> None:
        super().__init__()
        self.dim, self.window, self.phase, self.shared = dim, window, phase, shared
        self.proj = nn.Conv2d(dim, dim, 1)
        self.__dict__["_scale"] = None  # bound by the stage hook; not a submodule, so saved once by the stage

    @staticmethod
    def block_defaults(index, network_config, options):
        return {"window": network_config.window_size - 3, "phase": index % 2}

    @property
    def pad_multiple(self) -> int:
        return self.window

    @classmethod
    def share_across_stage(cls, mixers, size):
        cls.sizes_seen.append(size)
        users = [m for m in mixers if m.shared]
        if not users:
            return {}
        holder = SharedScale(users[0].dim)
        for m in users:
            m.__dict__["_scale"] = holder
        return {"hook_scale": holder}

    def forward(self, x):
        y = self.proj(x)  # (B, C, H, W)
        return y * self._scale.scale[:, None, None] if self._scale is not None else y


@pytest.fixture
def hooked():
    register_mixer(KEY, paper="a test, 2026", family="conv", complexity="O(N)")(HookedMixer)
    HookedMixer.sizes_seen = []
    yield HookedMixer
    MIXERS.unregister(KEY)


def _mixers(net):
    return [block.attn for block in net.blocks()]


def test_plugin_gets_block_defaults_padding_and_a_shared_scale_in_the_restoration_net(hooked):
    net = build_arch("ir", preset="tiny", in_chans=1, embed_dim=8, depths=(3, 2), mixer=KEY, window_size=8)
    mixers = _mixers(net)
    assert [m.window for m in mixers] == [5] * 5  # from the network's window_size, as attention_window's window
    assert [m.phase for m in mixers] == [0, 1, 0, 0, 1]  # block index within the group, as attention_window's shift
    assert net.pad_multiple == 5  # the mixers' pad_multiple, as attention_window's window
    assert hooked.sizes_seen == [net.cfg.embed_size] * 2  # once per group, with the size hco's FVE gets
    # one scale per group, registered on the group (as hco's freq_embed) and bound to each of its mixers
    keys = [k for k in net.state_dict() if "hook_scale" in k]
    assert keys == ["layers.0.hook_scale.scale", "layers.1.hook_scale.scale"]
    assert all(m._scale is net.layers[0].hook_scale for m in mixers[:3])
    assert all(m._scale is net.layers[1].hook_scale for m in mixers[3:])
    x = torch.rand(1, 1, 13, 17)
    y = net(x)
    assert y.shape == x.shape  # padded to 15 x 20 inside, cropped back
    y.sum().backward()
    assert net.layers[0].hook_scale.scale.grad is not None


def test_the_spec_overrides_block_defaults_and_sets_the_padding(hooked):
    net = build_arch("ir", preset="tiny", in_chans=1, embed_dim=8, depths=(2,), mixer=f"{KEY}:window=3,shared=False")
    assert [(m.window, m.phase) for m in _mixers(net)] == [(3, 0), (3, 1)]
    assert net.pad_multiple == 3
    assert not any("hook_scale" in k for k in net.state_dict())  # the hook shares nothing: no key


def test_builtin_hooks_give_what_the_named_special_cases_gave():
    net = build_arch("ir", preset="tiny", in_chans=1, embed_dim=8, depths=(2,), mixer="attention_window", num_heads=2)
    assert [(m.window_size, m.shift, m.num_heads) for m in _mixers(net)] == [(8, 0, 2), (8, 4, 2)]
    assert net.pad_multiple == 8
    assert mixer_block_defaults("attention_window", 1, net.cfg, {"window_size": 6}) == {"shift": 3, "num_heads": 2}
    assert mixer_pad_multiple("conv", nn.Identity()) == 1
    hco = build_arch("ir", preset="tiny", in_chans=1, embed_dim=8, depths=(2,), mixer="hco:k_mode=predicted_shared")
    assert all(m._embedding() is hco.layers[0].freq_embed for m in _mixers(hco))


def test_plugin_and_hco_share_side_by_side_in_one_group_and_in_a_metaformer_stage(hooked):
    mixer = [[KEY, "hco:k_mode=predicted_shared"]]
    net = build_arch("ir", preset="tiny", in_chans=1, embed_dim=8, depths=(2,), mixer=mixer)
    group = net.layers[0]
    assert isinstance(group.hook_scale, SharedScale) and group.freq_embed is not None
    meta = build_arch("metaformer", mixer=KEY, depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=10)
    assert [k for k in meta.state_dict() if "hook_scale" in k] == [f"stages.{i}.hook_scale.scale" for i in range(4)]
    assert meta(torch.rand(1, 3, 64, 64)).shape == (1, 10)


def test_two_hooks_returning_one_key_is_an_error(hooked):
    class Other(HookedMixer):  # another class with the same key
        pass

    with pytest.raises(SandboxError, match="hook_scale"):
        stage_shared_modules([HookedMixer(4), Other(4)], 8)
