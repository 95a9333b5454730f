"""Reference denoisers that load the official weights: DnCNN and FFDNet.

Both are re-implemented after the papers and KAIR's layout, so the KAIR ``.pth`` files load as they are
(``model.{i}.weight`` with the ReLUs at the odd indices of one ``nn.Sequential``) and the official MatConvNet ``.mat``
files load through :func:`archs.matconvnet.read_matconvnet`. Inputs are images in [0, 1].

    >>> net = build_arch("dncnn:variant=s,sigma=25,weights=official")   # needs SANDBOX_DATA
    >>> net = build_arch("ffdnet:in_chans=3,sigma=50,weights=official")
    >>> denoised = net(noisy)             # or net(noisy, sigma=torch.tensor([15.0, 50.0])) per sample

``weights``: ``None`` (random init), a path (``.mat`` read as MatConvNet, anything else as a torch state_dict) or
``"official"``, resolved by :func:`official_weights` under ``$SANDBOX_DATA/weights`` (``.pth`` preferred).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.checkpoint import load_checkpoint
from sandbox.errors import OptionError, SandboxError, check_choice, check_int, check_positive
from sandbox.registry import register_arch

from .matconvnet import read_matconvnet

__all__ = ["DnCNN", "FFDNet", "dncnn", "ffdnet", "official_weights"]

DNCNN_PAPER = "Zhang et al., Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising, TIP 2017"
FFDNET_PAPER = "Zhang et al., FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising, TIP 2018"

# (arch, variant, in_chans, sigma) -> files under <data root>/weights, preferred first
_OFFICIAL: dict[tuple[str, str, int, int | None], tuple[str, ...]] = {
    ("dncnn", "s", 1, 15): ("dncnn_matconvnet/specifics_gray/sigma=15.mat",),
    ("dncnn", "s", 1, 25): ("pytorch/kair_model_zoo/dncnn_25.pth", "dncnn_matconvnet/specifics_gray/sigma=25.mat"),
    ("dncnn", "s", 1, 50): ("dncnn_matconvnet/specifics_gray/sigma=50.mat",),
    ("dncnn", "b", 1, None): ("pytorch/kair_release_mirror/dncnn_gray_blind.pth", "dncnn_matconvnet/GD_Gray_Blind.mat"),
    ("dncnn", "b", 3, None): (
        "pytorch/kair_release_mirror/dncnn_color_blind.pth",
        "dncnn_matconvnet/GD_Color_Blind.mat",
    ),
    ("dncnn", "3", 1, None): ("dncnn_matconvnet/DnCNN3.mat",),
    ("ffdnet", "awgn", 1, None): ("ffdnet_matconvnet/FFDNet_gray.mat",),
    ("ffdnet", "awgn", 3, None): ("pytorch/kair_release_mirror/ffdnet_color.pth", "ffdnet_matconvnet/FFDNet_color.mat"),
    ("ffdnet", "clip", 1, None): ("ffdnet_matconvnet/FFDNet_Clip_gray.mat",),
    ("ffdnet", "clip", 3, None): ("ffdnet_matconvnet/FFDNet_Clip_color.mat",),
}


def _conv_stack(in_ch: int, out_ch: int, depth: int, width: int) -> nn.Sequential:
    """conv(in->width)+ReLU, (depth-2) x [conv(width->width)+ReLU], conv(width->out): convs at the even indices."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(width, out_ch, 3, padding=1))
    return nn.Sequential(*layers)


class DnCNN(nn.Module):
    """DnCNN with batch norm merged into the convolutions (as released): predicts the noise, returns ``x - noise``.

    Args:
        in_chans: image channels (1 gray, 3 color); the output has as many.
        depth: number of 3x3 convolutions (17 for DnCNN-S, 20 for DnCNN-B / CDnCNN-B / DnCNN-3).
        width: channels of the hidden convolutions.
    """

    def __init__(self, in_chans: int = 1, depth: int = 17, width: int = 64) -> None:
        super().__init__()
        check_int("in_chans", in_chans)
        check_int("depth", depth, minimum=2)
        check_int("width", width)
        self.in_chans = in_chans
        self.model = _conv_stack(in_chans, in_chans, depth, width)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> denoised (B, C, H, W); any H, W."""
        return x - self.model(x)


class FFDNet(nn.Module):
    """FFDNet: a CNN on the 2x pixel-unshuffled image plus a noise-level map, then pixel-shuffled back. No residual.

    Args:
        in_chans: image channels (1 gray, 3 color).
        depth: number of 3x3 convolutions (default 15 gray, 12 color).
        width: channels of the hidden convolutions (default 64 gray, 96 color).
        sigma: default noise level on the 0..255 scale, used when ``forward`` gets none.
    """

    def __init__(self, in_chans: int = 1, depth: int | None = None, width: int | None = None, sigma: float = 25.0):
        super().__init__()
        check_int("in_chans", in_chans)
        depth = (15 if in_chans == 1 else 12) if depth is None else depth
        width = (64 if in_chans == 1 else 96) if width is None else width
        check_int("depth", depth, minimum=2)
        check_int("width", width)
        check_positive("sigma", sigma, allow_zero=True)
        self.in_chans, self.sigma = in_chans, float(sigma)
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.model = _conv_stack(4 * in_chans + 1, 4 * in_chans, depth, width)

    def _noise_level(self, sigma: float | Tensor | None, x: Tensor) -> Tensor:
        """Noise level as a (B, 1, 1, 1) tensor on the [0, 1] scale."""
        b = x.shape[0]
        sigma = self.sigma if sigma is None else sigma
        if not isinstance(sigma, Tensor):
            return x.new_full((b, 1, 1, 1), float(sigma) / 255.0)
        if sigma.numel() not in (1, b):
            raise SandboxError(
                f"FFDNet sigma has shape {tuple(sigma.shape)}; expected a number, (B,) or (B, 1, 1, 1) with B={b}"
            )
        return (sigma.to(x) / 255.0).reshape(-1, 1, 1, 1).expand(b, 1, 1, 1)

    def forward(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """Denoise ``x`` (B, C, H, W) in [0, 1]; any H, W.

        Args:
            x: noisy images.
            sigma: noise level on the 0..255 scale: a number, or a tensor (B,) / (B, 1, 1, 1) per sample;
                default ``self.sigma``.
        """
        h, w = x.shape[-2:]
        level = self._noise_level(sigma, x)
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")  # even H, W: replicate the last row / column
        x = self.down(x)  # (B, C, H', W') -> (B, 4C, H'/2, W'/2), channel c*4 + 2*row + col
        level = level.expand(-1, -1, *x.shape[-2:])  # (B, 1, H'/2, W'/2)
        x = self.model(torch.cat([x, level], dim=1))  # (B, 4C + 1, ...) -> (B, 4C, ...)
        return self.up(x)[..., :h, :w]  # (B, C, H', W') -> crop to (B, C, H, W)


def official_weights(
    arch: str, variant: str, in_chans: int, sigma: int | None, data_root: str | os.PathLike | None = None
) -> Path:
    """The official weights file of a reference network under ``<data_root>/weights`` (``.pth`` preferred to ``.mat``).

    Args:
        arch: ``"dncnn"`` or ``"ffdnet"``.
        variant: DnCNN ``"s"``, ``"b"`` or ``"3"``; FFDNet ``"awgn"`` or ``"clip"`` (trained on clipped noise).
        in_chans: 1 or 3.
        sigma: the noise level of DnCNN-S (15, 25 or 50); ``None`` for the others.
        data_root: the data folder; default ``$SANDBOX_DATA``.

    Raises:
        OptionError: no official model of that kind exists (the message lists those that do).
        SandboxError: the data folder is not given, or the file is not in it.
    """
    key = (arch, variant, in_chans, sigma)
    if key not in _OFFICIAL:
        have = ", ".join(
            f"variant={v!r} in_chans={c}" + (f" sigma={s}" if s is not None else "")
            for a, v, c, s in _OFFICIAL
            if a == arch
        )
        wanted = f"variant={variant!r} in_chans={in_chans}" + (f" sigma={sigma}" if sigma is not None else "")
        raise OptionError(f"no official {arch} weights for {wanted}; available: {have}")
    expected = _OFFICIAL[key]
    root = data_root if data_root is not None else os.environ.get("SANDBOX_DATA")
    if not root:
        raise SandboxError(
            f"weights='official' needs the data folder: set SANDBOX_DATA or pass data_root; expected file "
            f"<data root>/weights/{expected[0]}"
        )
    for rel in expected:
        if (Path(root) / "weights" / rel).is_file():
            return Path(root) / "weights" / rel
    tried = " or ".join(str(Path(root) / "weights" / rel) for rel in expected)
    raise SandboxError(f"official {arch} weights not found: expected file {tried}; set SANDBOX_DATA or pass data_root")


def _unshuffle_order(chans: int) -> list[int]:
    """For each PyTorch pixel-unshuffle channel, the MatConvNet ``SubP`` channel holding the same pixels.

    PyTorch (and KAIR) put row offset i, column offset j of image channel c at c*4 + 2i + j; MatConvNet enumerates the
    offsets column-major, c*4 + 2j + i. Checked against KAIR's ffdnet_color.pth: the two differ exactly so.
    """
    return [c * 4 + 2 * j + i for c in range(chans) for i in range(2) for j in range(2)]


def _mat_state_dict(path: Path, model: nn.Module, unshuffled: bool) -> dict[str, Tensor]:
    """The convolutions of a .mat file as ``model.{2n}.weight/bias``; ``unshuffled``: reorder FFDNet's SubP channels."""
    convs = read_matconvnet(path)
    n_model = sum(isinstance(m, nn.Conv2d) for m in model.model)
    if len(convs) != n_model:
        raise SandboxError(
            f"{str(path)!r} has {len(convs)} conv layers but {type(model).__name__} has {n_model}; is it another model?"
        )
    tensors = [(torch.from_numpy(c["weight"]), torch.from_numpy(c["bias"])) for c in convs]
    if unshuffled:
        order = _unshuffle_order(model.in_chans)
        (w0, b0), (wl, bl) = tensors[0], tensors[-1]
        if w0.shape[1] == len(order) + 1 and wl.shape[0] == len(order):  # else load_checkpoint reports the shapes
            tensors[0] = (w0[:, order + [len(order)]], b0)  # input channels: 4C unshuffled + the noise-level map
            tensors[-1] = (wl[order], bl[order])
    state = {}
    for n, (w, b) in enumerate(tensors):
        state[f"model.{2 * n}.weight"], state[f"model.{2 * n}.bias"] = w, b
    return state


def _load(model: nn.Module, path: Path) -> nn.Module:
    if path.suffix.lower() == ".mat":
        return load_checkpoint(model, _mat_state_dict(path, model, unshuffled=isinstance(model, FFDNet)))
    return load_checkpoint(model, path)


@register_arch(
    "dncnn",
    family="reference",
    paper=DNCNN_PAPER,
    input="1 or 3 channels in [0, 1], any H, W",
    official="0.56M (S) / 0.67M (B)",
)
def dncnn(
    variant: str = "s",
    in_chans: int = 1,
    sigma: int | None = None,
    weights: str | None = None,
    data_root: str | None = None,
) -> DnCNN:
    """DnCNN denoiser (17 convs for DnCNN-S, 20 for DnCNN-B / CDnCNN-B / DnCNN-3), optionally with official weights.

    Args:
        variant: ``"s"`` one model per noise level, ``"b"`` blind (color when ``in_chans=3``: CDnCNN-B), ``"3"``
            DnCNN-3 (gray denoising, super-resolution and JPEG deblocking in one model).
        in_chans: 1 (gray) or 3 (color).
        sigma: noise level of a DnCNN-S model (official: 15, 25 or 50); must be unset for the blind variants.
        weights: ``None`` (random init), a ``.pth`` / ``.mat`` path, or ``"official"``.
        data_root: data folder for ``weights="official"`` (default ``$SANDBOX_DATA``).
    """
    variant = str(variant).lower()  # "variant=3" in a spec string arrives as the int 3
    check_choice("variant", variant, ("s", "b", "3"))
    check_choice("in_chans", in_chans, (1, 3))
    if sigma is not None:
        if variant != "s":
            raise OptionError(f"sigma={sigma!r} is not valid for dncnn variant={variant!r} (blind); leave sigma unset")
        check_positive("sigma", sigma)
        sigma = int(sigma) if float(sigma).is_integer() else sigma
    model = DnCNN(in_chans, depth=17 if variant == "s" else 20)
    if weights is None:
        return model
    if weights == "official":
        if variant == "s" and sigma is None:
            raise OptionError("dncnn variant='s' with weights='official' needs sigma (15, 25 or 50)")
        weights = official_weights("dncnn", variant, in_chans, sigma, data_root)
    return _load(model, Path(weights))


@register_arch(
    "ffdnet",
    family="reference",
    paper=FFDNET_PAPER,
    input="1 or 3 channels in [0, 1], any H, W",
    official="0.49M (gray) / 0.85M (color)",
    sigma_input=True,  # takes the noise level as an input: evaluators pass the task's sigma
)
def ffdnet(
    in_chans: int = 1,
    sigma: float = 25.0,
    weights: str | None = None,
    clip: bool = False,
    data_root: str | None = None,
) -> FFDNet:
    """FFDNet denoiser (15 convs of 64 gray, 12 of 96 color), one model for every noise level.

    Args:
        in_chans: 1 (gray) or 3 (color).
        sigma: default noise level (0..255 scale) when ``forward`` gets none.
        weights: ``None`` (random init), a ``.pth`` / ``.mat`` path, or ``"official"``.
        clip: with ``weights="official"``, the models trained on clipped noise (``FFDNet_Clip_*.mat``).
        data_root: data folder for ``weights="official"`` (default ``$SANDBOX_DATA``).
    """
    check_choice("in_chans", in_chans, (1, 3))
    check_choice("clip", clip, (False, True))
    if clip and weights != "official":
        raise OptionError("clip=True selects the official clipped-noise weights; it needs weights='official'")
    model = FFDNet(in_chans, sigma=sigma)
    if weights is None:
        return model
    if weights == "official":
        weights = official_weights("ffdnet", "clip" if clip else "awgn", in_chans, None, data_root)
    return _load(model, Path(weights))
