"""The official implementations beside ours: load them from a folder, build both with one configuration, map weights.

Used by ``python experiments/bench.py official --official-dir DIR``. ``DIR`` holds each official repository as
``<Repo>/<path in repo>``, at the commits below; nothing of it is copied into this project::

    DIR/vHeat/classification/models/vHeat.py         MzeroMiko/vHeat         bcc4da7   Heat2D
    DIR/HyenaPixel/src/hyenapixel/nn/hyenapixel.py   spravil/HyenaPixel      191ffab   HyenaPixelOperator
    DIR/HyenaPixel/src/hyenapixel/nn/hyena.py                                          HyenaOperator
    DIR/SwinIR/models/network_swinir.py              JingyunLiang/SwinIR     6545850   SwinTransformerBlock, SwinIR
    DIR/GFNet/gfnet.py                               raoyongming/GFNet       2de48b6   GlobalFilter

The official files import ``timm`` and ``einops`` (``pip install timm einops``). GFNet's ``gfnet.py`` imports
``numpy.lib.arraypad``, which numpy 2 renamed ``numpy.lib._arraypad_impl``; the loader aliases the old name when
it is missing (the import is unused).

Each :class:`Pair` builds an official module and ours with the same configuration at one size, copies the official
weights onto ours (so the outputs can be compared: equivalence), and says in words what differs structurally. Each
side runs on its own layout: the official modules take channels-last ``(B, H, W, C)`` or tokens ``(B, H*W, C)``
where the official code does, ours ``(B, C, H, W)``; the layout conversions the official module does inside are
its cost, the conversion of the benchmark's input is done once, outside the timed calls.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from sandbox.errors import OptionError

REPOS = {  # folder under --official-dir -> (GitHub repository, commit the pairs were written against)
    "vHeat": ("MzeroMiko/vHeat", "bcc4da7"),
    "HyenaPixel": ("spravil/HyenaPixel", "191ffab"),
    "SwinIR": ("JingyunLiang/SwinIR", "6545850"),
    "GFNet": ("raoyongming/GFNet", "2de48b6"),
}
HYENAPIXEL_FILES = (  # what `hyenapixel.nn.hyenapixel` and `hyenapixel.nn.hyena` import from the package
    "src/hyenapixel/__init__.py",
    "src/hyenapixel/metaformer.py",
    "src/hyenapixel/nn/__init__.py",
    "src/hyenapixel/nn/hyena.py",
    "src/hyenapixel/nn/hyenapixel.py",
    "src/hyenapixel/nn/functional/__init__.py",
    "src/hyenapixel/nn/functional/fft_convolution.py",
)


# ---------------------------------------------------------------------------------------------------- loading
def official_file(root: Path, repo: str, rel: str) -> Path:
    """``root/repo/rel``, or one OptionError line naming the missing file and where it comes from."""
    path = Path(root) / repo / rel
    if not path.is_file():
        github, commit = REPOS[repo]
        raise OptionError(
            f"official file not found: {path} (expected {github} at commit {commit} under --official-dir as "
            f"{repo}/{rel})"
        )
    return path


@contextlib.contextmanager
def _import_errors(path: Path):
    """Turn a missing dependency of an official file into one line naming the file and the package."""
    try:
        yield
    except ModuleNotFoundError as e:
        raise OptionError(
            f"{path} imports {e.name!r}, which is not installed here (the official code needs timm and einops: "
            f"pip install timm einops)"
        ) from None


_LOADED: dict[Path, Any] = {}


def load_file(root: Path, repo: str, rel: str) -> Any:
    """Import one official file as a module of its own (cached per path)."""
    path = official_file(root, repo, rel).resolve()
    if path in _LOADED:
        return _LOADED[path]
    if repo == "GFNet":
        _alias_numpy_arraypad()
    name = f"official_{repo.lower()}_{len(_LOADED)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with _import_errors(path):
        spec.loader.exec_module(module)
    _LOADED[path] = module
    return module


def load_hyenapixel(root: Path, module: str) -> Any:
    """Import ``hyenapixel.nn.<module>`` from ``root/HyenaPixel/src`` (a package: its files import each other)."""
    for rel in HYENAPIXEL_FILES:
        official_file(root, "HyenaPixel", rel)
    src = str((Path(root) / "HyenaPixel" / "src").resolve())
    loaded = sys.modules.get("hyenapixel")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(src):
        raise OptionError(f"another 'hyenapixel' package is already imported ({loaded.__file__}); use a new process")
    if src not in sys.path:
        sys.path.insert(0, src)
    with _import_errors(Path(src) / "hyenapixel" / "nn" / f"{module}.py"):
        return importlib.import_module(f"hyenapixel.nn.{module}")


def _alias_numpy_arraypad() -> None:
    try:
        importlib.import_module("numpy.lib.arraypad")
    except ModuleNotFoundError:
        sys.modules["numpy.lib.arraypad"] = importlib.import_module("numpy.lib._arraypad_impl")


# ---------------------------------------------------------------------------------------------------- weights
def copy_weights(
    ours: nn.Module,
    official: dict[str, Tensor],
    rename: Callable[[str], str] = lambda k: k,
    transform: dict[str, Callable[[Tensor], Tensor]] | None = None,
) -> list[str]:
    """Copy official tensors onto ``ours``: our key ``k`` takes ``official[rename(k)]`` (through ``transform[k]``
    when given), reshaped to our shape (1 x 1 convolutions onto Linears). Returns our keys that had no official
    tensor (they keep their values: tensors that are derived on our side)."""
    transform = transform or {}
    state, missing = ours.state_dict(), []
    for key, value in state.items():
        src = official.get(rename(key))
        if src is None:
            missing.append(key)
            continue
        src = transform[key](src) if key in transform else src
        if src.numel() != value.numel():
            raise OptionError(f"official {rename(key)} has shape {tuple(src.shape)}; ours {key} {tuple(value.shape)}")
        state[key] = src.detach().reshape(value.shape).to(value.dtype).clone()
    ours.load_state_dict(state)
    return missing


# ---------------------------------------------------------------------------------------------------- layouts
def to_cl(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W, C), contiguous."""
    return x.permute(0, 2, 3, 1).contiguous()


def from_cl(y: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, C, H, W)."""
    return y.permute(0, 3, 1, 2)


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), contiguous."""
    return x.flatten(2).transpose(1, 2).contiguous()


def tokens_to_cf(y: Tensor, h: int, w: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return y.transpose(1, 2).reshape(y.shape[0], -1, h, w)


@dataclass
class Side:
    """One side of a pair: a module, how a (B, C, H, W) tensor becomes its input, how its output becomes
    (B, C, H, W) (for the equivalence check and the backward's gradient)."""

    module: nn.Module
    to_input: Callable[[Tensor], Tensor] = lambda x: x
    to_cf: Callable[[Tensor], Tensor] = lambda y: y


class _Sequence(nn.Module):
    """Blocks called one after the other with extra arguments (SwinIR blocks take the map size)."""

    def __init__(self, blocks: list[nn.Module], *extra: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.extra = extra

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, *self.extra)
        return x


class _Zero(nn.Module):
    """Stands in for a block's MLP: a 0-dim zero, so ``x + mlp(norm2(x))`` adds nothing (same on both sides)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(())


def _drop_mlp(block: nn.Module) -> nn.Module:
    block.mlp, block.norm2 = _Zero(), nn.Identity()
    return block


class _HeatWithEmbed(nn.Module):
    """vHeat's ``Heat2D`` with its frequency value embedding as a parameter of its own (vHeat's stage owns it and
    passes it to every block)."""

    def __init__(self, heat: nn.Module, size: int, dim: int) -> None:
        super().__init__()
        self.heat = heat
        self.freq_embed = nn.Parameter(torch.empty(size, size, dim))
        nn.init.trunc_normal_(self.freq_embed, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.heat(x, self.freq_embed)


# ---------------------------------------------------------------------------------------------------- pairs
@dataclass
class Pair:
    """An official module and ours, built by ``build(official_dir, dim, size) -> (official Side, our Side)``."""

    name: str  # our mixer (or network)
    official: str  # the official module
    repo: str  # folder under --official-dir
    config: str  # the configuration both are built with (S is the size)
    differs: str  # what differs structurally
    build: Callable[[Path, int, int], tuple[Side, Side]]
    equivalent: bool = True  # False: no weight mapping (a different network timed against the official one)


def _hco(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from operators.hco import HeatConduction

    vheat = load_file(root, "vHeat", "classification/models/vHeat.py")
    official = _HeatWithEmbed(vheat.Heat2D(res=size, dim=dim, hidden_dim=dim), size, dim)
    ours = HeatConduction(dim, k_mode="predicted", embed_size=size)
    rename = {"freq_embed.weight": "freq_embed"}
    copy_weights(ours, official.state_dict(), lambda k: rename.get(k, "heat." + k))
    return Side(official), Side(ours)


def _hyena_pixel(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from operators.hyena_pixel import HyenaPixelMixer

    hpx = load_hyenapixel(root, "hyenapixel")
    k = 2 * size - 1
    official = hpx.HyenaPixelOperator(dim=dim, long_kernel_size=k, use_layernorm=True, filter_emb_dim=32)
    ours = HyenaPixelMixer(dim, filter_size=k, emb_dim=32, filter_order=64, use_layernorm=True, learned_pos=True)
    # official deltas are stored divided by K (its decay is exp(-r |delta|)); ours divide by decay_scale = K
    copy_weights(ours, official.state_dict(), transform={"long_conv.deltas": lambda d: d * k})
    return Side(official, to_cl, from_cl), Side(ours)


def _hyena_bi(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from operators.hyena_bi import HyenaBiMixer

    hyena = load_hyenapixel(root, "hyena")
    official = hyena.HyenaOperator(dim=dim, l_max=size * size, order=2, filter_order=64, emb_dim=33, is_causal=False)
    ours = HyenaBiMixer(dim, emb_dim=33, filter_order=64)
    copy_weights(ours, official.state_dict())
    return Side(official, to_cl, from_cl), Side(ours)


def _window_blocks(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from archs.restoration import MixerBlock
    from operators.attention_window import WindowAttention, default_window_heads

    swinir = load_file(root, "SwinIR", "models/network_swinir.py")
    heads, ws = default_window_heads(dim), 8
    official = _Sequence(
        [
            _drop_mlp(swinir.SwinTransformerBlock(dim, (size, size), heads, window_size=ws, shift_size=s))
            for s in (0, ws // 2)
        ],
        (size, size),
    )
    ours = _Sequence(
        [_drop_mlp(MixerBlock(dim, WindowAttention(dim, ws, shift=s, num_heads=heads), 2.0, 0.0)) for s in (0, ws // 2)]
    )
    copy_weights(ours, official.state_dict())
    return Side(official, to_tokens, lambda y: tokens_to_cf(y, size, size)), Side(ours)


def _gfnet(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from operators.gfnet import GlobalFilter

    gfnet = load_file(root, "GFNet", "gfnet.py")
    official = gfnet.GlobalFilter(dim, h=size, w=size // 2 + 1)
    ours = GlobalFilter(dim, size=size)
    copy_weights(ours, official.state_dict())
    return Side(official, to_tokens, lambda y: tokens_to_cf(y, size, size)), Side(ours)


NET_WIDTH, NET_DEPTHS, NET_HEADS = 60, (4, 4, 4, 4), 6


def _official_swinir(root: Path, size: int) -> nn.Module:
    swinir = load_file(root, "SwinIR", "models/network_swinir.py")
    return swinir.SwinIR(
        img_size=size, in_chans=3, embed_dim=NET_WIDTH, depths=list(NET_DEPTHS), num_heads=[NET_HEADS] * 4,
        window_size=8, mlp_ratio=2.0, img_range=1.0, upsampler="", resi_connection="1conv",
    )  # fmt: skip


def _swinir_net(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from archs.restoration import swinir

    official = _official_swinir(root, size)
    ours = swinir("paper", "denoise", 3, embed_dim=NET_WIDTH, depths=NET_DEPTHS, num_heads=NET_HEADS)
    ours.load_state_dict(ours.checkpoint_filter_fn(official.state_dict()))  # drops SwinIR's size-specific buffers
    return Side(official), Side(ours)


def _vheatir_net(root: Path, dim: int, size: int) -> tuple[Side, Side]:
    from archs.restoration import vheatir

    ours = vheatir("paper", "denoise", 3, embed_dim=NET_WIDTH, depths=NET_DEPTHS)
    return Side(_official_swinir(root, size)), Side(ours)


PAIRS: dict[str, Pair] = {
    p.name: p
    for p in [
        Pair(
            "hco",
            "Heat2D",
            "vHeat",
            "official Heat2D(res=S, dim=C, hidden_dim=C) called with a (S, S, C) frequency embedding parameter; ours "
            "hco(k_mode=predicted, embed_size=S)",
            "ours owns the frequency embedding (vHeat's stage passes it in; here a parameter of the official side), "
            "resamples it bicubically to the map (a no-op at embed_size = S) and picks the DCT path per size "
            "(on CPU matrix below 160 px, FFT from 160 px); vHeat always multiplies by cosine matrices",
            _hco,
        ),
        Pair(
            "hyena_pixel",
            "HyenaPixelOperator",
            "HyenaPixel",
            "official HyenaPixelOperator(dim=C, long_kernel_size=2S-1, use_layernorm=True, filter_emb_dim=32); ours "
            "hyena_pixel(filter_size=2S-1, emb_dim=32, filter_order=64, learned_pos=True)",
            "official input and output (B, H, W, C); its K x K distance map is a frozen parameter, ours is derived; "
            "ours stores deltas multiplied by K; ours evaluates only the kernel taps that reach an output",
            _hyena_pixel,
        ),
        Pair(
            "hyena_bi",
            "HyenaOperator (is_causal=False)",
            "HyenaPixel",
            "official HyenaOperator(dim=C, l_max=S*S, order=2, filter_order=64, emb_dim=33, is_causal=False); ours "
            "hyena_bi(emb_dim=33, filter_order=64), global filter",
            "official input and output (B, H, W, C); its positional embedding z is a parameter at l_max and its "
            "modulation a buffer, ours derives both for the length at hand",
            _hyena_bi,
        ),
        Pair(
            "attention_window",
            "2 x SwinTransformerBlock (MLP removed)",
            "SwinIR",
            "two blocks, shift 0 and 4: official SwinTransformerBlock(C, (S, S), heads, window_size=8) on (B, S*S, C) "
            "tokens with the map size; ours MixerBlock(C, attention_window(window_size=8, num_heads=heads)); "
            "heads = C / 32; each block's MLP and norm2 replaced by a zero on both sides",
            "official blocks take tokens (B, H*W, C) and keep the shift mask of their construction size as a "
            "buffer; ours take (B, C, H, W), keep masks per size in a cache and pad any size to the window",
            _window_blocks,
        ),
        Pair(
            "gfnet",
            "GlobalFilter",
            "GFNet",
            "official GlobalFilter(C, h=S, w=S//2+1) on (B, S*S, C) tokens; ours gfnet(size=S)",
            "official input and output (B, H*W, C); ours resamples the filter for other sizes (a no-op at S)",
            _gfnet,
        ),
    ]
}
NETS: dict[str, Pair] = {
    p.name: p
    for p in [
        Pair(
            "swinir",
            "SwinIR",
            "SwinIR",
            f"embed {NET_WIDTH}, depths {'x'.join(map(str, NET_DEPTHS))}, {NET_HEADS} heads, window 8, mlp ratio 2, "
            "3 channels, denoising (upsampler ''), img_size = S on the official side",
            "official runs on tokens (B, H*W, C) inside, ours channels-first (B, C, H, W)",
            _swinir_net,
        ),
        Pair(
            "vheatir",
            "SwinIR",
            "SwinIR",
            f"ours vheatir at SwinIR's width and depth (embed {NET_WIDTH}, depths {'x'.join(map(str, NET_DEPTHS))}) "
            "against the official SwinIR above",
            "a different network (HCO in place of attention): timed only, no equivalence",
            _vheatir_net,
            equivalent=False,
        ),
    ]
}
