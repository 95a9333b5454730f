"""One MetaFormer-style 4-stage classification network for every mixer, and its registered configurations.

::

    x (B, in_chans, H, W) -> stem (stride 4) -> stage 1 -> down (stride 2) -> stage 2 -> ... -> stage 4
      -> head -> logits (B, num_classes)

    stage i:  depths[i] blocks of width dims[i], each with its own token mixer (one spec per stage or per block)
    "metaformer" block:  x = rs1 * x + ls1 * DP(mixer(norm1(x)));  x = rs2 * x + ls2 * DP(mlp(norm2(x)))
                         norm: LayerNorm over C without bias, eps 1e-6; mlp: Linear(C, rC, no bias) -> StarReLU ->
                         Linear(rC, C, no bias)                                   (MetaFormer, Yu et al.)
    "vheat" block:       the same with LayerNorm over C (bias, eps 1e-5) and mlp 1x1 Conv(C, rC) -> GELU ->
                         1x1 Conv(rC, C) with biases                              (vHeat's HeatBlock)
    post_norm=True:      x = rs1 * x + ls1 * DP(norm1(mixer(x))), ... ("res-post-norm", vHeat-S/B)

rs (ResScale) and ls (LayerScale) are per-channel learnable scales, present where their init value is not None.
Everything is channels-first (B, C, H, W), the mixer contract of this sandbox (timm's NCHW port of MetaFormer, vHeat).

Registered configurations (family "classification"), with the official counts at 1 x 3 x 224 x 224 measured from the
official module definitions (params) and the papers/READMEs (FLOPs = multiply-adds, FFTs not counted):

=================  ====================================================================  ===============
key                what                                                                  official
=================  ====================================================================  ===============
vheat_tiny/small/  vHeat-T/S/B: HCO, frequency value embeddings shared per stage          30.85M / 4.6G
base               (size = feature size at img_size), InternImage stem, vHeat downsample  52.22M / 8.5G
                   and head                                                               92.13M / 14.9G
hpxformer_s18      HpxFormer-S18: HyenaPixel K = 2 x side - 1 at img_size (111/55/27/13)   29.34M / 4.9G
hbformer_s18       HbFormer-S18: bidirectional Hyena over the raster order                28.25M
chpxformer_s18     C-HpxFormer-S18: SepConv, SepConv, HyenaPixel K=27, K=13 (no norms)     28M
convformer_s18     ConvFormer-S18: SepConv x 4                                             26.77M / 3.9G
caformer_s18       CAFormer-S18: SepConv, SepConv, Attention, Attention                    26.34M / 4.1G
fvnet_nano/tiny/   FVNet (MPFB mixer). No official code: widths and depths are ours,       FVNet-T: 3.1M /
small              chosen so that FVNet-T matches the paper's 3.1M params / 0.4G           0.4G (paper)
metaformer         any registered mixer (``mixer=...``), every field overridable
=================  ====================================================================  ===============

Every entrypoint takes ``num_classes``, ``in_chans``, ``drop_path_rate`` and any :class:`MetaFormerConfig` field as
keyword overrides (checked: an unknown field is a one-line :class:`OptionError` with a close match).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from operators._common import LayerNormCF, StarReLU, linear_cf
from sandbox.config import apply_overrides
from sandbox.errors import OptionError, check_choice, check_int, check_positive
from sandbox.registry import build_mixer, register_arch

from .layers import DropPath, block_specs, share_across_stage

__all__ = [
    "MetaFormerConfig",
    "MetaFormer",
    "MetaFormerBlock",
    "HeatBlock",
    "DropPath",
    "stage_sizes",
]

BLOCKS = ("metaformer", "vheat")
STEMS = ("metaformer", "vheat")
DOWNSAMPLES = ("metaformer", "vheat")
HEADS = ("linear", "mlp", "vheat")

ScaleInit = float | None  # an init value of ResScale / LayerScale, None: no scale


@dataclass
class MetaFormerConfig:
    """Configuration of :class:`MetaFormer` (defaults: a small PoolFormer-S12-like network with the ``pool`` mixer)."""

    in_chans: int = 3  # image channels
    num_classes: int = 1000  # logits
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage
    dims: tuple[int, ...] = (64, 128, 320, 512)  # width per stage
    mixers: Any = "pool"  # one spec, one per stage, or per stage a list of one spec per block (spec: name,
    # "name:key=value,..." or {"name": ..., **options})
    block: str = "metaformer"  # "metaformer" (StarReLU MLP, LN w/o bias) or "vheat" (HeatBlock: GELU conv MLP, LN)
    stem: str = "metaformer"  # "metaformer" (7x7 s4 conv + LN w/o bias) or "vheat" (InternImage two-conv stem)
    downsample: str = "metaformer"  # "metaformer" (LN w/o bias + 3x3 s2 conv) or "vheat" (3x3 s2 conv + LN)
    head: str = "linear"  # "linear" (pool, LN, Linear), "mlp" (pool, LN, MlpHead) or "vheat" (LN, pool, Linear)
    mlp_ratio: float = 4.0  # hidden width of the block MLP = mlp_ratio * C
    layer_scale: ScaleInit | tuple[ScaleInit, ...] = None  # LayerScale init value, one or one per stage (None: off)
    res_scale: ScaleInit | tuple[ScaleInit, ...] = (
        None,
        None,
        1.0,
        1.0,
    )  # ResScale init, one or per stage (MetaFormer)
    post_norm: bool = False  # res-post-norm blocks x + DP(norm(mixer(x))) (vHeat-S/B) instead of pre-norm
    drop_path_rate: float = 0.0  # stochastic depth, linear from 0 over all blocks
    head_dropout: float = 0.0  # dropout before the last Linear of the head
    share_frequency_embedding: bool = True  # one FVE per stage for hco(k_mode="predicted_shared") mixers (vHeat)
    img_size: int = 224  # training resolution: FVE sizes and the filter sizes of configs defined at 224 follow it
    init_mixers: bool = True  # the network init (MetaFormer: trunc_normal(0.02) on every Conv2d/Linear, zero
    # biases) also re-initialises the mixers, as the official code does; False keeps each mixer's own init


def _stem_out(n: int, stem: str) -> int:
    if stem == "metaformer":
        return (n + 2 * 2 - 7) // 4 + 1  # 7x7, stride 4, padding 2
    return ((n + 1) // 2 + 1) // 2  # two 3x3, stride 2, padding 1 convs: ceil(ceil(n / 2) / 2)


def stage_sizes(cfg: MetaFormerConfig, size: int | None = None) -> list[int]:
    """Side of each stage's map for a ``size`` x ``size`` input (default ``cfg.img_size``): 56/28/14/7 at 224."""
    s = _stem_out(cfg.img_size if size is None else size, cfg.stem)
    sizes = [s]
    for _ in cfg.depths[1:]:
        s = (s + 1) // 2  # 3x3, stride 2, padding 1
        sizes.append(s)
    return sizes


# --------------------------------------------------------------------------------------------------------- layers
class Scale(nn.Module):
    """Per-channel learnable scale of a (B, C, H, W) tensor, ``scale`` (C,) initialised to ``init`` (MetaFormer)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale[:, None, None]


def _scale(dim: int, init: float | None) -> nn.Module:
    return nn.Identity() if init is None else Scale(dim, init)


class StarMlp(nn.Module):
    """MetaFormer MLP: Linear(C, hC, no bias) -> StarReLU -> Linear(hC, C, no bias) over the channels of (B,C,H,W)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.act = StarReLU()
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return linear_cf(self.act(linear_cf(x, self.fc1)), self.fc2)  # (B, C, H, W)


class ConvMlp(nn.Module):
    """vHeat MLP: 1x1 Conv2d(C, hC) -> GELU -> 1x1 Conv2d(hC, C), with biases. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MetaFormerBlock(nn.Module):
    """MetaFormer block around any mixer. (B, C, H, W) -> (B, C, H, W).

    Pre-norm: ``x = rs1(x) + ls1(DP(mixer(norm1(x))))``, then the same with the MLP; ``post_norm`` moves each norm
    after its branch. Norms are LayerNorm over C without bias (eps 1e-6); the MLP is :class:`StarMlp`.

    Args:
        dim: channels C.
        mixer: the token mixer module, (B, C, H, W) -> (B, C, H, W).
        mlp_ratio: MLP hidden width / C.
        drop_path: stochastic depth probability of both branches.
        layer_scale: LayerScale init value (None: no LayerScale).
        res_scale: ResScale init value (None: no ResScale).
        post_norm: res-post-norm instead of pre-norm.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        res_scale: float | None = None,
        post_norm: bool = False,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = self._norm(dim)
        self.token_mixer = mixer
        self.drop_path = DropPath(drop_path)
        self.layer_scale1 = _scale(dim, layer_scale)
        self.res_scale1 = _scale(dim, res_scale)
        self.norm2 = self._norm(dim)
        self.mlp = self._mlp(dim, int(mlp_ratio * dim))
        self.layer_scale2 = _scale(dim, layer_scale)
        self.res_scale2 = _scale(dim, res_scale)

    def _norm(self, dim: int) -> nn.Module:
        return LayerNormCF(dim, eps=1e-6, bias=False)

    def _mlp(self, dim: int, hidden: int) -> nn.Module:
        return StarMlp(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        if self.post_norm:
            x = self.res_scale1(x) + self.layer_scale1(self.drop_path(self.norm1(self.token_mixer(x))))
            return self.res_scale2(x) + self.layer_scale2(self.drop_path(self.norm2(self.mlp(x))))
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path(self.token_mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path(self.mlp(self.norm2(x))))


class HeatBlock(MetaFormerBlock):
    """vHeat's HeatBlock around any mixer: as :class:`MetaFormerBlock` with LayerNorm over C (with bias, eps 1e-5)
    and the :class:`ConvMlp` (1x1 convs with bias, GELU). (B, C, H, W) -> (B, C, H, W)."""

    def _norm(self, dim: int) -> nn.Module:
        return LayerNormCF(dim, eps=1e-5)

    def _mlp(self, dim: int, hidden: int) -> nn.Module:
        return ConvMlp(dim, hidden)


class Stage(nn.Module):
    """The blocks of one stage; owns what its mixers share across the stage (their ``share_across_stage`` hooks:
    hco's frequency value embedding ``freq_embed``), if anything."""

    def __init__(self, blocks: Sequence[nn.Module], embed_size: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if embed_size is not None:  # e.g. one FVE, bound to every hco(k_mode="predicted_shared") block of the stage
            share_across_stage(self, self.blocks, embed_size)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _stem(kind: str, in_chans: int, dim: int) -> nn.Module:
    if kind == "metaformer":  # overlapping patch embedding, then LN over C without bias
        return nn.Sequential(nn.Conv2d(in_chans, dim, 7, stride=4, padding=2), LayerNormCF(dim, eps=1e-6, bias=False))
    half = dim // 2  # vHeat / InternImage: two stride-2 3x3 convs with LN and GELU
    return nn.Sequential(
        nn.Conv2d(in_chans, half, 3, stride=2, padding=1),
        LayerNormCF(half, eps=1e-6),
        nn.GELU(),
        nn.Conv2d(half, dim, 3, stride=2, padding=1),
        LayerNormCF(dim, eps=1e-6),
    )


def _downsample(kind: str, dim_in: int, dim_out: int) -> nn.Module:
    if kind == "metaformer":  # pre-norm, conv with bias
        return nn.Sequential(LayerNormCF(dim_in, eps=1e-6, bias=False), nn.Conv2d(dim_in, dim_out, 3, 2, 1))
    return nn.Sequential(nn.Conv2d(dim_in, dim_out, 3, 2, 1, bias=False), LayerNormCF(dim_out, eps=1e-5))


class SquaredReLU(nn.Module):
    """relu(x) ** 2 (MetaFormer's MlpHead activation)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


class LinearHead(nn.Module):
    """Global average pool -> LayerNorm (eps 1e-6) -> dropout -> Linear. (B, C, h, w) -> (B, classes)."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.norm(x.mean(dim=(2, 3)))))  # (B, C) -> (B, classes)


class MlpHead(nn.Module):
    """Pool -> LayerNorm (eps 1e-6) -> MetaFormer's MlpHead: Linear(C, 4C) -> SquaredReLU -> LayerNorm -> dropout ->
    Linear(4C, classes). (B, C, h, w) -> (B, classes)."""

    def __init__(self, dim: int, num_classes: int, dropout: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = SquaredReLU()
        self.head_norm = nn.LayerNorm(mlp_ratio * dim)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(mlp_ratio * dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x.mean(dim=(2, 3)))  # (B, C)
        return self.fc2(self.drop(self.head_norm(self.act(self.fc1(x)))))  # (B, classes)


class HeatHead(nn.Module):
    """vHeat's classifier: LayerNorm over C (eps 1e-5) -> pool -> dropout -> Linear. (B, C, h, w) -> (B, classes)."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.norm = LayerNormCF(dim, eps=1e-5)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.norm(x).mean(dim=(2, 3))))  # (B, classes)


HEAD_CLASSES: dict[str, Callable[[int, int, float], nn.Module]] = {
    "linear": LinearHead,
    "mlp": MlpHead,
    "vheat": HeatHead,
}


# -------------------------------------------------------------------------------------------------------- network
def _per_stage(value: Any, n: int, what: str) -> list[Any]:
    """A scalar broadcast to ``n`` stages, or a list of ``n`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise OptionError(f"{what}={list(value)!r} has {len(value)} values; the network has {n} stages")
        return list(value)
    return [value] * n


def _check_config(cfg: MetaFormerConfig) -> None:
    check_int("in_chans", cfg.in_chans)
    check_int("num_classes", cfg.num_classes)
    check_int("img_size", cfg.img_size, minimum=8)
    n = len(cfg.depths)
    if n == 0 or not all(isinstance(d, int) and d >= 1 for d in cfg.depths):
        raise OptionError(f"depths={cfg.depths!r} is not valid; expected a non-empty list of integers >= 1")
    if len(cfg.dims) != n or not all(isinstance(d, int) and d >= 1 for d in cfg.dims):
        raise OptionError(f"dims={cfg.dims!r} is not valid; expected {n} integers >= 1 (one per stage)")
    check_choice("block", cfg.block, BLOCKS)
    check_choice("stem", cfg.stem, STEMS)
    check_choice("downsample", cfg.downsample, DOWNSAMPLES)
    check_choice("head", cfg.head, HEADS)
    check_positive("mlp_ratio", cfg.mlp_ratio)
    for what in ("drop_path_rate", "head_dropout"):
        value = getattr(cfg, what)
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise OptionError(f"{what}={value!r} is not valid; expected a number in [0, 1)")


class MetaFormer(nn.Module):
    """MetaFormer-style 4-stage classifier with a plug-in token mixer per stage or per block.

    Maps (B, in_chans, H, W) -> logits (B, num_classes) for any H, W >= 32 (odd sizes too): frequency embeddings of
    vHeat's HCO are resampled to the feature size, HyenaPixel's fixed K x K filters are applied by padded FFTs,
    attention is global. :meth:`forward_features` returns the last feature map (B, dims[-1], ~H/32, ~W/32).

    state_dict keys: ``stem``, ``downsample_layers.{i}``, ``stages.{i}.blocks.{j}.{norm1, token_mixer,
    layer_scale1, res_scale1, norm2, mlp.fc1, mlp.fc2, layer_scale2, res_scale2}``, ``stages.{i}.freq_embed`` (stages
    whose hco mixers share a frequency value embedding), ``head``.

    Init: ``block="metaformer"``: trunc_normal(std 0.02) on every Conv2d and Linear weight, zero biases (with
    ``init_mixers=False`` only outside the mixers); ``block="vheat"``: Linear weights trunc_normal(0.02), zero biases,
    convolutions keep PyTorch's default (vHeat).

    Args:
        cfg: a :class:`MetaFormerConfig`.
    """

    def __init__(self, cfg: MetaFormerConfig) -> None:
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.num_features = cfg.dims[-1]
        n = len(cfg.depths)
        layer_scales = _per_stage(cfg.layer_scale, n, "layer_scale")
        res_scales = _per_stage(cfg.res_scale, n, "res_scale")
        specs = block_specs(cfg.mixers, cfg.depths, "mixers", "stage", "stage", first=1)
        embed_sizes = stage_sizes(cfg) if cfg.share_frequency_embedding else [None] * n
        block_cls = HeatBlock if cfg.block == "vheat" else MetaFormerBlock
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()

        self.stem = _stem(cfg.stem, cfg.in_chans, cfg.dims[0])
        self.downsample_layers = nn.ModuleList(
            _downsample(cfg.downsample, cfg.dims[i], cfg.dims[i + 1]) for i in range(n - 1)
        )
        stages, k = [], 0
        for i, dim in enumerate(cfg.dims):
            blocks = []
            for spec in specs[i]:
                mixer = build_mixer(spec, dim)
                blocks.append(
                    block_cls(dim, mixer, cfg.mlp_ratio, rates[k], layer_scales[i], res_scales[i], cfg.post_norm)
                )
                k += 1
            stages.append(Stage(blocks, embed_sizes[i]))
        self.stages = nn.ModuleList(stages)
        self.head = HEAD_CLASSES[cfg.head](cfg.dims[-1], cfg.num_classes, cfg.head_dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        skip: set[int] = set()
        if not self.cfg.init_mixers:
            skip = {
                id(m)
                for block in self.modules()
                if isinstance(block, MetaFormerBlock)
                for m in block.token_mixer.modules()
            }
        for m in self.modules():
            if id(m) in skip:
                continue
            conv = isinstance(m, nn.Conv2d) and self.cfg.block == "metaformer"
            if isinstance(m, nn.Linear) or conv:
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> the last stage's feature map (B, dims[-1], h, w)."""
        x = self.stem(x)  # (B, dims[0], ~H/4, ~W/4)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsample_layers[i - 1](x)  # (B, dims[i], ~H/2^(i+2), ~W/2^(i+2))
            x = stage(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        """Last feature map (B, C, h, w) -> logits (B, num_classes)."""
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise OptionError(f"expected input (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------- entrypoints
def _create(
    base: dict[str, Any],
    overrides: dict[str, Any],
    mixers: Callable[[MetaFormerConfig], Any] | None = None,
) -> MetaFormer:
    """Build from config values ``base`` and user ``overrides``; ``mixers(cfg)`` fills in mixers that depend on the
    final config (e.g. HyenaPixel filter sizes from ``img_size``) unless the user overrides them."""
    cfg = apply_overrides(apply_overrides(MetaFormerConfig(), base, "network config"), overrides, "network config")
    if mixers is not None and "mixers" not in overrides:
        cfg = dataclasses.replace(cfg, mixers=mixers(cfg))
    return MetaFormer(cfg)


def _common(num_classes: int, in_chans: int, drop_path_rate: float) -> dict[str, Any]:
    return {"num_classes": num_classes, "in_chans": in_chans, "drop_path_rate": drop_path_rate}


S18 = {"depths": (3, 3, 9, 3), "dims": (64, 128, 320, 512)}

# ------------------------------------------------------------------------------------------------------------ vHeat
VHEAT_PAPER = "Wang et al., vHeat: Building Vision Models upon Heat Conduction, CVPR 2025"
VHEAT = {
    "mixers": {"name": "hco", "k_mode": "predicted_shared"},
    "block": "vheat",
    "stem": "vheat",
    "downsample": "vheat",
    "head": "vheat",
    "res_scale": None,
    "share_frequency_embedding": True,
}


@register_arch("vheat_tiny", family="classification", paper=VHEAT_PAPER, input="3x224x224", official="30.85M/4.6G")
def vheat_tiny(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.1, **overrides: Any) -> MetaFormer:
    """vHeat-T: HCO, depths 2/2/6/2, dims 96/192/384/768, pre-norm, no layer scale, FVE shared per stage.

    Args:
        num_classes: logits.
        in_chans: image channels.
        drop_path_rate: stochastic depth (vHeat-T trains with 0.1).
        overrides: any :class:`MetaFormerConfig` field.
    """
    base = {**VHEAT, "depths": (2, 2, 6, 2), "dims": (96, 192, 384, 768)}
    return _create({**base, **_common(num_classes, in_chans, drop_path_rate)}, overrides)


@register_arch("vheat_small", family="classification", paper=VHEAT_PAPER, input="3x224x224", official="52.22M/8.5G")
def vheat_small(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.3, **overrides: Any
) -> MetaFormer:
    """vHeat-S: depths 2/2/18/2, dims 96/192/384/768, res-post-norm, layer scale 1e-5 (see :func:`vheat_tiny`)."""
    base = {**VHEAT, "depths": (2, 2, 18, 2), "dims": (96, 192, 384, 768), "post_norm": True, "layer_scale": 1e-5}
    return _create({**base, **_common(num_classes, in_chans, drop_path_rate)}, overrides)


@register_arch("vheat_base", family="classification", paper=VHEAT_PAPER, input="3x224x224", official="92.13M/14.9G")
def vheat_base(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.5, **overrides: Any) -> MetaFormer:
    """vHeat-B: depths 2/2/18/2, dims 128/256/512/1024, res-post-norm, layer scale 1e-5 (see :func:`vheat_tiny`)."""
    base = {**VHEAT, "depths": (2, 2, 18, 2), "dims": (128, 256, 512, 1024), "post_norm": True, "layer_scale": 1e-5}
    return _create({**base, **_common(num_classes, in_chans, drop_path_rate)}, overrides)


# -------------------------------------------------------------------------------------------- HyenaPixel family
HPX_PAPER = "Spravil et al., HyenaPixel: Global Image Context with Convolutions, ECAI 2024"


def _hpx(cfg: MetaFormerConfig, stage: int, emb_dim: int, use_layernorm: bool) -> dict[str, Any]:
    """HyenaPixel with K = 2 x side - 1 of the stage's map at img_size (global at the training resolution, 111 at
    stage 1 for 224) and the official z Parameter (``learned_pos``)."""
    k = 2 * stage_sizes(cfg)[stage] - 1
    return {
        "name": "hyena_pixel",
        "filter_size": k,
        "emb_dim": emb_dim,
        "filter_order": 2 * emb_dim,
        "use_layernorm": use_layernorm,
        "learned_pos": True,
    }


@register_arch("hpxformer_s18", family="classification", paper=HPX_PAPER, input="3x224x224", official="29.34M/4.9G")
def hpxformer_s18(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.2, **overrides: Any
) -> MetaFormer:
    """HpxFormer-S18: HyenaPixel in every stage, K = 111/55/27/13 at 224 (``img_size=384``: 191/95/47/23),
    E = 32/32/48/64, filter MLP width 2E, qk/out LayerNorms; MetaFormer S18 skeleton with MlpHead.

    Args:
        num_classes: logits.
        in_chans: image channels.
        drop_path_rate: stochastic depth (S18 trains with 0.2).
        overrides: any :class:`MetaFormerConfig` field.
    """

    def mixers(cfg: MetaFormerConfig) -> list[dict[str, Any]]:
        return [_hpx(cfg, i, e, True) for i, e in enumerate((32, 32, 48, 64))]

    base = {**S18, "head": "mlp", **_common(num_classes, in_chans, drop_path_rate)}
    return _create(base, overrides, mixers)


@register_arch("hbformer_s18", family="classification", paper=HPX_PAPER, input="3x224x224", official="28.25M")
def hbformer_s18(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.2, **overrides: Any
) -> MetaFormer:
    """HbFormer-S18 (official ``hb_former_s18``): bidirectional Hyena over the raster order, global filters,
    E = 33/33/49/65, filter MLP width 64/64/96/128; MetaFormer S18 skeleton with MlpHead (see :func:`hpxformer_s18`)."""
    mixers = [
        {"name": "hyena_bi", "emb_dim": e, "filter_order": w} for e, w in ((33, 64), (33, 64), (49, 96), (65, 128))
    ]
    base = {**S18, "mixers": mixers, "head": "mlp", **_common(num_classes, in_chans, drop_path_rate)}
    return _create(base, overrides)


@register_arch("chpxformer_s18", family="classification", paper=HPX_PAPER, input="3x224x224", official="28M (README)")
def chpxformer_s18(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.2, **overrides: Any
) -> MetaFormer:
    """C-HpxFormer-S18: SepConv, SepConv, HyenaPixel K=27, K=13 (at 224), no qk/out norms; S18 with MlpHead."""

    def mixers(cfg: MetaFormerConfig) -> list[Any]:
        return ["sepconv", "sepconv", _hpx(cfg, 2, 48, False), _hpx(cfg, 3, 64, False)]

    base = {**S18, "head": "mlp", **_common(num_classes, in_chans, drop_path_rate)}
    return _create(base, overrides, mixers)


# ------------------------------------------------------------------------------------------ MetaFormer baselines
METAFORMER_PAPER = "Yu et al., MetaFormer Baselines for Vision, TPAMI 2024"


@register_arch(
    "convformer_s18", family="classification", paper=METAFORMER_PAPER, input="3x224x224", official="26.77M/3.9G"
)
def convformer_s18(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.2, **overrides: Any
) -> MetaFormer:
    """ConvFormer-S18: SepConv (7x7) in every stage, MlpHead (see :func:`hpxformer_s18` for the arguments)."""
    base = {**S18, "mixers": "sepconv", "head": "mlp", **_common(num_classes, in_chans, drop_path_rate)}
    return _create(base, overrides)


@register_arch(
    "caformer_s18", family="classification", paper=METAFORMER_PAPER, input="3x224x224", official="26.34M/4.1G"
)
def caformer_s18(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.2, **overrides: Any
) -> MetaFormer:
    """CAFormer-S18: SepConv, SepConv, global Attention (head_dim 32), Attention; MlpHead."""
    mixers = ["sepconv", "sepconv", "attention_global", "attention_global"]
    base = {**S18, "mixers": mixers, "head": "mlp", **_common(num_classes, in_chans, drop_path_rate)}
    return _create(base, overrides)


# ------------------------------------------------------------------------------------------------------- FVNet
FVNET_PAPER = "FVNet (AAAI 2026), MPFB mixer; no official code: these widths and depths are ours"
# Chosen (not published) so that FVNet-T lands on the paper's totals, 3.1M params and 0.4 GFLOPs at 224, with the
# MPFB defaults (3 phases, attention fusion, 3x3 local features) in the MetaFormer skeleton and a linear head.
# Measured with count_params / count_macs at 224: N 1.86M / 0.23G, T 3.15M / 0.40G, S 6.74M / 0.82G.
FVNET = {
    "nano": {"depths": (2, 2, 6, 2), "dims": (24, 48, 96, 160)},
    "tiny": {"depths": (2, 2, 6, 2), "dims": (32, 64, 128, 208)},
    "small": {"depths": (2, 3, 9, 3), "dims": (40, 80, 160, 256)},
}


def _fvnet(size: str, num_classes: int, in_chans: int, drop_path_rate: float, overrides: dict) -> MetaFormer:
    base = {**FVNET[size], "mixers": "mpfb", "head": "linear", "init_mixers": False}
    return _create({**base, **_common(num_classes, in_chans, drop_path_rate)}, overrides)


@register_arch("fvnet_nano", family="classification", paper=FVNET_PAPER, input="3x224x224")
def fvnet_nano(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **overrides: Any) -> MetaFormer:
    """FVNet-N (our config, smaller than FVNet-T): MPFB mixers in the MetaFormer skeleton, linear head."""
    return _fvnet("nano", num_classes, in_chans, drop_path_rate, overrides)


@register_arch(
    "fvnet_tiny", family="classification", paper=FVNET_PAPER, input="3x224x224", official="3.1M/0.4G (paper)"
)
def fvnet_tiny(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.1, **overrides: Any) -> MetaFormer:
    """FVNet-T (our config, matched to the paper's 3.1M params / 0.4 GFLOPs): MPFB mixers, MetaFormer skeleton."""
    return _fvnet("tiny", num_classes, in_chans, drop_path_rate, overrides)


@register_arch("fvnet_small", family="classification", paper=FVNET_PAPER, input="3x224x224")
def fvnet_small(
    num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.1, **overrides: Any
) -> MetaFormer:
    """FVNet-S (our config, larger than FVNet-T): MPFB mixers in the MetaFormer skeleton, linear head."""
    return _fvnet("small", num_classes, in_chans, drop_path_rate, overrides)


# ----------------------------------------------------------------------------------------------------- generic
@register_arch(
    "metaformer",
    family="classification",
    paper="MetaFormer skeleton (Yu et al., TPAMI 2024) with any registered mixer (mixer=...)",
    input="3xHxW, H, W >= 32",
)
def metaformer(
    mixer: Any = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    **overrides: Any,
) -> MetaFormer:
    """The MetaFormer skeleton with any registered mixer (plugins included); defaults as :class:`MetaFormerConfig`.

    Args:
        mixer: one spec for every block (``"hco"``, ``{"name": "conv", "kernel_size": 5}``); the same as
            ``mixers=``, which also takes one spec per stage or per block.
        num_classes: logits.
        in_chans: image channels.
        drop_path_rate: stochastic depth.
        overrides: any :class:`MetaFormerConfig` field (``depths``, ``dims``, ``block``, ``head``, ...).
    """
    if mixer is not None:
        if "mixers" in overrides:
            raise OptionError("give either mixer= (one spec) or mixers= (per stage), not both")
        overrides = {**overrides, "mixers": mixer}
    return _create(_common(num_classes, in_chans, drop_path_rate), overrides)
