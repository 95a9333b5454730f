"""One restoration network for every mixer: SwinIR's topology with the token mixer as a plug-in.

::

    x -> pad to the mixers' multiple (reflect) -> (x - mean) * img_range
      -> conv_first (3x3, in -> C) = f0
      -> LayerNorm -> G residual groups -> LayerNorm -> conv_after_body (3x3) + f0 = res
      -> x + conv_last(res) (3x3, C -> in) -> / img_range + mean -> crop

    residual group:  x + conv(blocks(x))
    block:           x = x + DropPath(attn(norm1(x)));  x = x + DropPath(mlp(norm2(x)))   (norm: LayerNorm over C)

Everything is channels-first (B, C, H, W); the mixer of each block (attribute ``attn``, SwinIR's name, so official
checkpoints load 1:1) maps (B, C, H, W) -> (B, C, H, W). Registered networks:

- ``swinir``: window attention with shifts alternating 0 and ws // 2 (SwinIR). state_dict-compatible with official
  SwinIR and BasicSR's ``SwinIR`` (``load_checkpoint`` drops their size-specific buffers).
- ``vheatir``: HCO (vHeat's heat conduction) in place of attention, with the frequency value embeddings shared by the
  blocks of each residual group, as vHeat shares them per stage.
- ``ir``: any registered mixer (plugins included), per network, per group or per block.

Presets: ``paper`` (SwinIR-M: embed 180, 6 groups of 6 blocks, mlp ratio 2; window 8 and img_range 1 for denoising,
window 7 and img_range 255 for JPEG as in SwinIR's test script), and CPU presets ``small`` and ``tiny`` that train
in minutes on two cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from operators._common import LayerNormCF, linear_cf
from sandbox.config import apply_overrides
from sandbox.errors import OptionError, SandboxError, check_int
from sandbox.inference import blend_window, self_ensemble, tiled_forward  # re-exported: the helpers live in the core
from sandbox.registry import build_mixer, mixer_block_defaults, mixer_pad_multiple, parse_spec, register_arch

from .layers import DropPath, block_specs, share_across_stage

__all__ = [
    "IRConfig",
    "RestorationNet",
    "PRESETS",
    "self_ensemble",
    "tiled_forward",
    "blend_window",
    "swinir_filter_fn",
    "ir",
    "swinir",
    "vheatir",
]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # SwinIR subtracts the DIV2K RGB mean from 3-channel inputs (0 for gray)


@dataclass
class IRConfig:
    """Configuration of :class:`RestorationNet` (defaults: SwinIR-M for color denoising)."""

    in_chans: int = 3  # image channels in and out (1 gray, 3 color)
    embed_dim: int = 180  # width C of every block
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)  # blocks per residual group
    mixer: Any = "attention_window"  # one spec, one per group, or a list per group of one per block
    mlp_ratio: float = 2.0  # hidden width of the block MLP = mlp_ratio * C
    window_size: int = 8  # given to attention_window mixers that do not set it (SwinIR: 8 denoise, 7 JPEG)
    shift_windows: bool = True  # attention_window: shift 0 on even blocks, window_size // 2 on odd ones (SwinIR)
    num_heads: int | None = None  # attention_window heads when the spec does not set them (None: about C / 30)
    img_range: float = 1.0  # inputs are scaled by this after the mean is subtracted (SwinIR: 255 for JPEG)
    embed_size: int = 32  # FVE side of hco(k_mode="predicted_shared") groups; 64 would add 3.3M params to "paper"
    drop_path_rate: float = 0.1  # stochastic depth, linear from 0 over all blocks (SwinIR default)
    patch_norm: bool = True  # LayerNorm after conv_first (SwinIR's patch_embed.norm)
    resi_connection: str = "1conv"  # group closing conv: "1conv" (3x3) or "3conv" (SwinIR's light variant)
    pad_multiple: int | None = None  # reflect-pad H, W to this multiple; None: what the mixers ask for
    pixel_unshuffle: int = 1  # s > 1: the body runs at 1/s resolution on s*s times the channels (FFDNet's reversible
    # downsampling): s*s fewer tokens per mixer; 1: full resolution, as SwinIR
    tile: int | None = None  # eval-mode forward runs tile x tile crops with blended overlaps (None: whole image)
    tile_overlap: int = 32  # overlap of neighbouring tiles in pixels


PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(embed_dim=180, depths=(6, 6, 6, 6, 6, 6), mlp_ratio=2.0),
    "small": dict(embed_dim=48, depths=(4, 4, 4), mlp_ratio=2.0, drop_path_rate=0.0),
    "tiny": dict(embed_dim=24, depths=(2, 2), mlp_ratio=2.0, drop_path_rate=0.0),
}
TASK_DEFAULTS = {  # SwinIR's define_model: JPEG uses window 7 ("JPEG encoding uses 8x8") and img_range 255
    "denoise": dict(window_size=8, img_range=1.0),
    "jpeg": dict(window_size=7, img_range=255.0),
}


# ------------------------------------------------------------------------------------------------------- blocks
class Mlp(nn.Module):
    """Linear(C, hC) -> GELU -> Linear(hC, C) over the channels of (B, C, H, W) (SwinIR's ``mlp.fc1``/``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return linear_cf(self.act(linear_cf(x, self.fc1)), self.fc2)  # (B, C, H, W)


class MixerBlock(nn.Module):
    """Pre-norm transformer block around any mixer: x + DP(attn(LN(x))), then x + DP(mlp(LN(x))). (B,C,H,W) in/out."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = LayerNormCF(dim)
        self.attn = mixer  # SwinIR's name for the token mixer, kept so official weights load 1:1
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNormCF(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BlockStack(nn.Module):
    """The blocks of one residual group (SwinIR's ``BasicLayer``; key ``residual_group.blocks.i``)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResidualGroup(nn.Module):
    """x + conv(blocks(x)) (SwinIR's RSTB). Owns what its mixers share across the group (their
    ``share_across_stage`` hooks: ``freq_embed`` for HCO blocks), if anything."""

    def __init__(self, dim: int, blocks: Sequence[nn.Module], resi_connection: str, embed_size: int) -> None:
        super().__init__()
        self.residual_group = BlockStack(blocks)
        if resi_connection == "1conv":
            self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        else:  # "3conv": SwinIR's parameter-light variant
            q = max(dim // 4, 1)
            self.conv = nn.Sequential(
                nn.Conv2d(dim, q, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(q, q, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(q, dim, 3, padding=1),
            )
        # e.g. one FVE per group, bound to every hco(k_mode="predicted_shared") block
        share_across_stage(self, self.residual_group.blocks, embed_size)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.residual_group(x))


# ---------------------------------------------------------------------------------------------------- network


def _resolve_mixer(spec: Any, index: int, cfg: IRConfig) -> tuple[str, dict[str, Any]]:
    """(name, options) of one block's mixer, with the defaults its ``block_defaults`` hook takes from the network
    config filled in (window attention: window, alternating shift, heads)."""
    name, options = parse_spec(spec, "mixer")
    return name, {**options, **mixer_block_defaults(name, index, cfg, options)}


class RestorationNet(nn.Module):
    """SwinIR-topology restoration network with a plug-in token mixer. Maps (B, C_in, H, W) -> (B, C_in, H, W).

    Any H, W >= 1: the input is reflect-padded to :attr:`pad_multiple` (window attention asks for its window, as
    SwinIR's ``check_image_size``; most mixers ask for nothing) and the output cropped back. With ``cfg.tile`` set,
    an eval-mode forward runs :func:`tiled_forward` (blended overlapping tiles) on images larger than a tile.
    Inputs are expected in [0, 1]; the residual is learned on ``(x - mean) * img_range``.

    state_dict keys follow SwinIR (``conv_first``, ``patch_embed.norm``, ``layers.g.residual_group.blocks.b.{norm1,
    attn, norm2, mlp.fc1, mlp.fc2}``, ``layers.g.conv``, ``norm``, ``conv_after_body``, ``conv_last``) plus
    ``layers.g.freq_embed`` for groups of HCO blocks sharing a frequency embedding.

    Args:
        cfg: an :class:`IRConfig`.
    """

    def __init__(self, cfg: IRConfig) -> None:
        super().__init__()
        check_int("in_chans", cfg.in_chans)
        check_int("embed_dim", cfg.embed_dim)
        if not cfg.depths or not all(isinstance(d, int) and d >= 1 for d in cfg.depths):
            raise OptionError(f"depths={cfg.depths!r} is not valid; expected a non-empty list of integers >= 1")
        if cfg.resi_connection not in ("1conv", "3conv"):
            raise OptionError(f"resi_connection={cfg.resi_connection!r} is not one of '1conv', '3conv'")
        if cfg.tile is not None:
            check_int("tile", cfg.tile)
            check_int("tile_overlap", cfg.tile_overlap, minimum=0)
            if cfg.tile_overlap >= cfg.tile:
                raise OptionError(f"tile_overlap={cfg.tile_overlap} must be smaller than tile={cfg.tile}")
        self.cfg = cfg
        self.in_chans = cfg.in_chans
        self.img_range = float(cfg.img_range)
        self.mean = DIV2K_MEAN if cfg.in_chans == 3 else (0.0,) * cfg.in_chans  # plain tuple: not state
        dim = cfg.embed_dim

        check_int("pixel_unshuffle", cfg.pixel_unshuffle)
        self.unshuffle = s = int(cfg.pixel_unshuffle)
        self.conv_first = nn.Conv2d(cfg.in_chans * s * s, dim, 3, padding=1)
        self.patch_embed = nn.Module()
        self.patch_embed.norm = LayerNormCF(dim) if cfg.patch_norm else nn.Identity()
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        groups, i = [], 0
        multiples = [cfg.pad_multiple] if cfg.pad_multiple else []
        for specs in block_specs(cfg.mixer, cfg.depths, "mixer", "group", "residual group"):
            blocks = []
            for b, spec in enumerate(specs):
                name, options = _resolve_mixer(spec, b, cfg)
                mixer = build_mixer({"name": name, **options}, dim)
                # hard size constraint of the mixer, and the multiple it prefers (window attention: its window)
                multiples.append(mixer_pad_multiple(name, mixer))
                blocks.append(MixerBlock(dim, mixer, cfg.mlp_ratio, rates[i]))
                i += 1
            groups.append(ResidualGroup(dim, blocks, cfg.resi_connection, cfg.embed_size))
        self.layers = nn.ModuleList(groups)
        self.norm = LayerNormCF(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv_last = nn.Conv2d(dim, cfg.in_chans * s * s, 3, padding=1)

        self.pad_multiple = s * math.lcm(*(int(m) for m in multiples))  # the mixers' multiples hold in the body
        self.apply(_init_weights)

    def blocks(self) -> Iterator[MixerBlock]:
        for group in self.layers:
            yield from group.residual_group.blocks

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed.norm(x)  # (B, C, H, W)
        for group in self.layers:
            x = group(x)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise SandboxError(
                f"{type(self).__name__} expects (B, {self.in_chans}, H, W) input, got {tuple(x.shape)}"
                + (" (a gray network given a color image?)" if x.ndim == 4 and x.shape[1] != self.in_chans else "")
            )
        cfg = self.cfg
        if cfg.tile is not None and not self.training and max(x.shape[-2:]) > cfg.tile:
            return tiled_forward(self._forward, x, cfg.tile, cfg.tile_overlap)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = _reflect_pad(x, self.pad_multiple)  # (B, C_in, Hp, Wp)
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        x = (x - mean) * self.img_range
        s = self.unshuffle
        first = self.conv_first(F.pixel_unshuffle(x, s) if s > 1 else x)  # (B, C, Hp / s, Wp / s)
        res = self.conv_after_body(self.forward_features(first)) + first
        out = self.conv_last(res)  # (B, C_in * s * s, Hp / s, Wp / s)
        x = x + (F.pixel_shuffle(out, s) if s > 1 else out)  # global residual on the normalised input
        return (x / self.img_range + mean)[..., :h, :w]

    def checkpoint_filter_fn(self, state: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
        return swinir_filter_fn(state, self)


def _init_weights(m: nn.Module) -> None:  # SwinIR: Linear trunc_normal(0.02), zero bias; LayerNorm 1/0; convs default
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        if m.weight is not None:
            nn.init.ones_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _reflect_pad(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple (reflect, as SwinIR; replicate where the map is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# ---------------------------------------------------------------------------------------------- official SwinIR
SWINIR_BUFFERS = ("attn_mask", "relative_position_index")


def swinir_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Adapt an official SwinIR / BasicSR SwinIR state_dict to :class:`RestorationNet`.

    Drops the size-specific buffers ``attn_mask`` and ``relative_position_index`` (rebuilt per input size here) and
    resizes ``relative_position_bias_table`` bicubically when the window size differs (as timm does for Swin).
    """
    own = model.state_dict()
    out = {}
    for k, v in state.items():
        if k.rsplit(".", 1)[-1] in SWINIR_BUFFERS:
            continue
        if k.endswith("relative_position_bias_table") and k in own and own[k].shape != v.shape:
            v = _resize_bias_table(v, own[k].shape)
        out[k] = v
    return out


def _resize_bias_table(table: Tensor, shape: torch.Size) -> Tensor:
    """((2w-1)^2, nH) -> ((2w'-1)^2, nH) by bicubic interpolation of the (2w-1) x (2w-1) grid, fp32."""
    n_old, n_new = round(math.sqrt(table.shape[0])), round(math.sqrt(shape[0]))
    if table.shape[1] != shape[1]:
        raise SandboxError(f"relative_position_bias_table has {table.shape[1]} heads; the network has {shape[1]}")
    grid = table.float().T.reshape(1, -1, n_old, n_old)  # (1, nH, 2w-1, 2w-1)
    grid = F.interpolate(grid, size=(n_new, n_new), mode="bicubic", align_corners=False)
    return grid.reshape(-1, n_new * n_new).T.to(table.dtype)  # ((2w'-1)^2, nH)


# --------------------------------------------------------------------------------------------------- entrypoints
def _make_config(preset: str, task: str, in_chans: int, base: dict[str, Any], overrides: dict[str, Any]) -> IRConfig:
    if preset not in PRESETS:
        raise OptionError(f"preset={preset!r} is not one of {', '.join(map(repr, PRESETS))}")
    kind = "jpeg" if str(task).startswith("jpeg") else "denoise" if str(task).startswith("denoise") else None
    if kind is None:
        raise OptionError(f"task={task!r} is not valid; expected one starting with 'denoise' or 'jpeg'")
    values = {**PRESETS[preset], **TASK_DEFAULTS[kind], **base, "in_chans": in_chans}
    return apply_overrides(apply_overrides(IRConfig(), values, "network config"), overrides, "network config")


SWINIR_PAPER = "Liang et al., SwinIR: Image Restoration Using Swin Transformer, ICCVW 2021"


@register_arch(
    "swinir", family="restoration", paper=SWINIR_PAPER, presets=tuple(PRESETS), official="11.50M (SwinIR-M color dn)"
)
def swinir(preset: str = "paper", task: str = "denoise", in_chans: int = 3, **overrides: Any) -> RestorationNet:
    """SwinIR (window attention, shifts alternating 0 / ws // 2); loads official SwinIR weights.

    Args:
        preset: ``paper`` (SwinIR-M), ``small`` or ``tiny``.
        task: ``denoise*`` (window 8, img_range 1) or ``jpeg*`` (window 7, img_range 255).
        in_chans: 1 (gray) or 3 (color).
        overrides: any :class:`IRConfig` field.
    """
    return RestorationNet(_make_config(preset, task, in_chans, {"mixer": "attention_window"}, overrides))


@register_arch(
    "vheatir",
    family="restoration",
    paper="vHeat (Wang et al., CVPR 2025) heat conduction in SwinIR's topology (ours; no official vHeatIR exists)",
    presets=tuple(PRESETS),
)
def vheatir(preset: str = "paper", task: str = "denoise", in_chans: int = 3, **overrides: Any) -> RestorationNet:
    """vHeatIR: SwinIR with HCO in place of attention; k predicted from frequency embeddings shared per group.

    Args:
        preset: ``paper`` (SwinIR-M sizes), ``small`` or ``tiny``.
        task: ``denoise*`` or ``jpeg*`` (sets img_range as SwinIR).
        in_chans: 1 (gray) or 3 (color).
        overrides: any :class:`IRConfig` field (e.g. ``mixer="hco:k_mode=fixed,k=1"`` for the vHeat ablations).
    """
    base = {"mixer": {"name": "hco", "k_mode": "predicted_shared"}}
    return RestorationNet(_make_config(preset, task, in_chans, base, overrides))


@register_arch(
    "ir",
    family="restoration",
    paper="SwinIR topology with any registered mixer (mixer=...)",
    presets=tuple(PRESETS),
)
def ir(
    mixer: Any = "attention_window",
    preset: str = "small",
    task: str = "denoise",
    in_chans: int = 3,
    **overrides: Any,
) -> RestorationNet:
    """SwinIR's topology with any registered mixer (plugins included).

    Args:
        mixer: one spec (``"hco"``, ``"conv:kernel_size=5"``, ``{"name": ...}``), a list with one per residual group,
            or a list per group of one spec per block.
        preset: ``paper``, ``small`` or ``tiny``.
        task: ``denoise*`` or ``jpeg*``.
        in_chans: 1 (gray) or 3 (color).
        overrides: any :class:`IRConfig` field.
    """
    return RestorationNet(_make_config(preset, task, in_chans, {"mixer": mixer}, overrides))
