"""Look inside mixers and networks: effective receptive fields, heat conduction, Hyena filters, predicted k.

    python experiments/visualize.py erf --arch vheatir --preset tiny [--checkpoint runs/<name>] [--images 8]
    python experiments/visualize.py erf --mixer hyena_pixel --preset small          # ir with that mixer
    python experiments/visualize.py heat [--k 0.25,1,4] [--times 1,4,16,64] [--checkpoint runs/<name>]
    python experiments/visualize.py filters [--mixer hyena_pixel | --arch hpxformer_s18 | --checkpoint ...]
    python experiments/visualize.py k --arch vheatir --checkpoint runs/<name>/checkpoints/best.pth

- ``erf``: effective receptive field (Luo et al., 2016; the maps of RepLKNet and vHeat): |d y / d x| of the centre
  pixel of an output map, summed over its channels, with respect to every input pixel (summed over input channels),
  averaged over ``--images`` images, shown as log10 relative to its maximum. The output map is the network's output
  for image-to-image networks, the last feature map (``forward_features``) for classifiers, or any module's output
  with ``--layer NAME``. Also prints the high-contribution area ratios (the smallest centred square holding 20%, 30%,
  50% and 99% of the gradient mass, as a fraction of the image area).
- ``heat``: HCO's operator on a point heat source, u(t) = IDCT2(DCT2(u0) * exp(-k (w_n^2 + w_m^2) t)) with
  Neumann (mirror) boundaries (``operators.hco``), at several t, for fixed k values and for the learned (scalar) or
  predicted (per frequency and channel; channel mean of the response shown) k of the hco layers of a network.
- ``filters``: the implicit long filters of the Hyena family materialised for an input size: HyenaPixel's 2-D kernels
  and radial decays, Hyena's and bidirectional Hyena's 1-D filters over the raster order and their windows.
- ``k``: the conductivity k = ReLU(Linear(FVE)) that each hco layer with predicted k uses, on the frequency grid
  of the feature map it sees for a ``--size`` input, channel mean per layer, rows = residual groups / stages.

Networks: ``--arch`` spec (``--mixer`` and ``--preset`` are passed to it; ``--mixer`` alone means ``ir``), or
``--checkpoint`` (a file, or a run directory: its ``checkpoints/best.pth``, else ``last.pth``), whose network is
rebuilt from the checkpoint itself. Without a checkpoint the weights are a fresh initialisation (seed 0). Images come
from the data root (``--data-root`` / ``$SANDBOX_DATA``, ``--set``) or else scikit-image's photographs. Every PNG is
written under ``--out`` (default ``outputs/visualize/<kind>_<timestamp>``) and its path printed.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import add_plugin_arg, markdown_table, run_main, stamped_dir  # noqa: E402
from sandbox.errors import OptionError, SandboxError  # noqa: E402
from sandbox.utils import slug  # noqa: E402

ERF_MASS = (0.2, 0.3, 0.5, 0.99)  # high-contribution area ratios reported (RepLKNet's thresholds and 99%)


# ---------------------------------------------------------------------------------------------------- networks
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.pth`` (else ``last.pth``)."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "best.pth", p / "checkpoints" / "last.pth", p / "best.pth"):
            if candidate.is_file():
                return candidate
        raise SandboxError(f"{str(p)!r} is a directory without checkpoints/best.pth or checkpoints/last.pth")
    if not p.is_file():
        raise SandboxError(f"checkpoint {str(p)!r} does not exist")
    return p


def arch_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    """The network spec from ``--arch``, ``--mixer``, ``--preset`` and ``--in-chans`` (None: none was given)."""
    from sandbox.networks import network_spec

    arch = args.arch or ("ir" if args.mixer else None)
    if arch is None:
        return None
    return network_spec(arch, flags={"mixer": args.mixer, "preset": args.preset, "in_chans": args.in_chans})


def load_net(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, str]:
    """(network in eval mode on ``device``, label) from ``--arch``/``--mixer``/``--preset`` and/or ``--checkpoint``."""
    from sandbox.networks import build_network_for
    from sandbox.report import mixer_label

    spec = arch_spec(args)
    if getattr(args, "checkpoint", None):
        from sandbox.evaluate import load_network

        path = resolve_checkpoint(args.checkpoint)
        net = load_network(spec, str(path), task=None)
        label = f"{mixer_label(getattr(net, 'arch_spec', spec))} ({path.name})"
    elif spec is not None:
        torch.manual_seed(args.seed)
        net = build_network_for(spec)
        label = f"{mixer_label(spec)} (fresh init)"
    else:
        raise OptionError("no network: give --arch SPEC (and --mixer for ir / metaformer), --mixer, or --checkpoint")
    return net.to(device).eval(), label


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else stamped_dir(Path("outputs") / "visualize", args.kind)


def _stage_of(name: str) -> str:
    """'layers.2.residual_group.blocks.1.attn' -> 'group 2'; 'stages.1.blocks.0.token_mixer' -> 'stage 1'."""
    m = re.match(r"^(layers|stages)\.(\d+)\.", name)
    if m is None:
        return "network"
    return f"{'group' if m.group(1) == 'layers' else 'stage'} {m.group(2)}"


def _short_name(name: str) -> str:
    """'layers.2.residual_group.blocks.1.attn' -> 'group 2 block 1'; 'stages.1.blocks.0.token_mixer' -> 'stage 1 block
    0'; anything else unchanged."""
    m = re.match(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.", name) or re.match(
        r"^stages\.(\d+)\.blocks\.(\d+)\.", name
    )
    if m is None:
        return name
    return f"{'group' if name.startswith('layers') else 'stage'} {m.group(1)} block {m.group(2)}"


def _parse_floats(text: str, flag: str, allow_zero: bool = True) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 or (v == 0 and not allow_zero) or not math.isfinite(v) for v in values):
        bound = ">= 0" if allow_zero else "> 0"
        raise OptionError(f"{flag} {text!r} is not valid; expected comma-separated numbers {bound}, e.g. 1,4,16")
    return values


def _parse_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", text):
        raise OptionError(f"{flag} {text!r} is not valid; expected comma-separated integers >= 0, e.g. 0,3")
    return [int(v) for v in text.split(",")]


def _pick(items: Sequence[Any], indices: list[int] | None, at_most: int, what: str) -> list[Any]:
    """``items[indices]`` (checked), or at most ``at_most`` evenly spaced items (first and last included)."""
    if indices is not None:
        bad = [i for i in indices if i >= len(items)]
        if bad:
            raise OptionError(f"--layers {bad[0]} is out of range; the network has {len(items)} {what} (0..)")
        return [items[i] for i in indices]
    if len(items) <= at_most:
        return list(items)
    picks = sorted({round(i * (len(items) - 1) / (at_most - 1)) for i in range(at_most)}) if at_most > 1 else [0]
    return [items[i] for i in picks]


# ---------------------------------------------------------------------------------------------------- images
def load_images(n: int, size: int, channels: int, set_name: str | None = None, root: str | None = None) -> Tensor:
    """(N, channels, size, size) float images in [0, 1]: centre crops of a data-root set, or of skimage's photos.

    Images smaller than ``size`` are reflect-padded; gray sources are replicated for 3 channels, color ones converted
    to gray (BT.601) for 1.
    """
    from sandbox.data import data_root, embedded_images, list_images, read_image, rgb_to_gray

    base = data_root(root)
    if base is not None:
        name = set_name or ("Set12" if channels == 1 else "CBSD68")
        arrays = [read_image(p, gray=channels == 1) for p in list_images(name, base)[:n]]
    else:  # the eval split first (camera, astronaut, chelsea, coins); the train split only if more are asked for
        arrays = [img for _, img in embedded_images(color=None, split="eval")][:n]
        if len(arrays) < n:
            arrays += [img for _, img in embedded_images(color=None, split="train")][: n - len(arrays)]
    out = []
    for img in arrays:
        if img.ndim == 3 and channels == 1:
            img = rgb_to_gray(img)
        t = torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)  # (C, H, W)
        if t.shape[0] != channels:
            t = t[:1].expand(channels, -1, -1)
        out.append(_centre_crop(t, size))
    if not out:
        raise SandboxError("no images to compute the receptive field on")
    return torch.stack(out)


def _centre_crop(t: Tensor, size: int) -> Tensor:
    _, h, w = t.shape
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        mode = "reflect" if ph < h and pw < w else "replicate"
        t = torch.nn.functional.pad(t[None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)[0]
        _, h, w = t.shape
    y0, x0 = (h - size) // 2, (w - size) // 2
    return t[:, y0 : y0 + size, x0 : x0 + size].contiguous()


# ---------------------------------------------------------------------------------------------------- ERF
class _Stop(Exception):
    """Raised by a forward hook once the wanted feature map exists: the rest of the network is not run."""


def feature_fn(net: nn.Module, layer: str | None) -> tuple[Callable[[Tensor], Tensor], str]:
    """(x -> the output map whose centre the ERF is taken at, its description).

    ``layer`` None: the network's output if it is a (B, C, H, W) map, else ``forward_features`` (classifiers).
    ``layer="output"``: the output. Any other: the output of the module of that name (``net.named_modules()``).
    """
    if layer not in (None, "output"):
        modules = dict(net.named_modules())
        if layer not in modules:
            import difflib

            close = difflib.get_close_matches(layer, list(modules), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise OptionError(f"--layer {layer!r} is not a module of the network{hint}")
        module = modules[layer]

        def run(x: Tensor) -> Tensor:
            store: dict[str, Tensor] = {}

            def hook(_m, _inp, out):
                store["y"] = out[0] if isinstance(out, (tuple, list)) else out
                raise _Stop

            handle = module.register_forward_hook(hook)
            try:
                net(x)
            except _Stop:
                pass
            finally:
                handle.remove()
            if "y" not in store:
                raise SandboxError(f"--layer {layer!r} did not run in the forward pass")
            return store["y"]

        return run, f"module {layer!r}"
    if layer is None and hasattr(net, "forward_features") and hasattr(net, "forward_head"):
        return net.forward_features, "last feature map (forward_features)"
    return net, "network output"


def effective_receptive_field(fn: Callable[[Tensor], Tensor], images: Tensor) -> np.ndarray:
    """Mean over images of |d (sum_c y[c, h // 2, w // 2]) / d x|, summed over input channels: (H, W) float64.

    ``fn`` maps (1, C, H, W) to a map (1, C', h, w); gradients flow to every input pixel.
    """
    acc = None
    for img in images:
        x = img[None].clone().requires_grad_(True)  # (1, C, H, W)
        y = fn(x)
        if y.ndim != 4:
            raise SandboxError(f"the ERF needs a (B, C, h, w) output map, got shape {tuple(y.shape)}; pick --layer")
        h, w = y.shape[-2:]
        y[:, :, h // 2, w // 2].sum().backward()
        g = x.grad.detach().abs().sum(1)[0].double().cpu().numpy()  # (H, W)
        acc = g if acc is None else acc + g
    return acc / len(images)


def area_ratios(erf: np.ndarray, fractions: Sequence[float] = ERF_MASS) -> dict[float, float]:
    """For each fraction t: area of the smallest square centred on the map's centre holding t of the mass / area.

    RepLKNet's high-contribution area ratio (it thresholds a rescaled log map; this uses the raw mass).
    """
    h, w = erf.shape
    cy, cx = h // 2, w // 2
    total = erf.sum()
    out = {}
    if total <= 0:
        return {t: float("nan") for t in fractions}
    reach = max(cy, cx, h - 1 - cy, w - 1 - cx)
    masses = []
    for r in range(reach + 1):
        masses.append(erf[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1].sum() / total)
    for t in fractions:
        r = next((i for i, m in enumerate(masses) if m >= t - 1e-12), reach)
        side_h = min(cy + r + 1, h) - max(0, cy - r)
        side_w = min(cx + r + 1, w) - max(0, cx - r)
        out[t] = side_h * side_w / (h * w)
    return out


def plot_erf(erf: np.ndarray, path: Path, title: str, floor: float = -6.0) -> Path:
    from sandbox.report import new_figure, save_figure

    rel = erf / erf.max() if erf.max() > 0 else erf
    logmap = np.log10(np.maximum(rel, 10.0**floor))
    fig = new_figure((5.6, 5.0))
    ax = fig.add_subplot()
    im = ax.imshow(logmap, cmap="inferno", vmin=floor, vmax=0.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.85, label="log10 |dy / dx| relative to its maximum")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def cmd_erf(args: argparse.Namespace, device: torch.device) -> list[Path]:
    from sandbox.registry import ARCHS

    net, label = load_net(args, device)
    for p in net.parameters():
        p.requires_grad_(False)  # gradients w.r.t. the input only
    family = ARCHS.entry(net.arch_spec["name"]).meta.get("family") if hasattr(net, "arch_spec") else None
    size = args.size or (224 if family == "classification" else 128)
    channels = int(getattr(net, "in_chans", 3))
    images = load_images(args.images, size, channels, args.set, args.data_root).to(device)
    fn, what = feature_fn(net, args.layer)
    erf = effective_receptive_field(fn, images)
    ratios = area_ratios(erf)
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"erf_{slug(label, empty='net')}"
    np.save(out / f"{stem}.npy", erf)
    ratio_txt = ", ".join(f"{int(t * 100)}%: {r:.3f}" for t, r in ratios.items())
    title = f"ERF of {label}\n{what}, {len(images)} images {size}x{size}\narea ratio holding {ratio_txt}"
    png = plot_erf(erf, out / f"{stem}.png", title)
    print(f"ERF of {label}: {what}, {len(images)} images of {size}x{size}, {channels} channel(s)")
    print(f"high-contribution area ratios (smallest centred square holding the gradient mass): {ratio_txt}")
    return [png, out / f"{stem}.npy"]


# ---------------------------------------------------------------------------------------------------- heat
def heat_response(x0: Tensor, k: Tensor | float, t: float) -> Tensor:
    """HCO's diffusion of ``x0`` (B, C, H, W) for time ``t``: IDCT2(DCT2(x0) * exp(-k (w_n^2 + w_m^2) t)).

    ``k``: a scalar or a (C, H, W) conductivity per frequency (predicted k). The operator's own functions
    (:func:`operators.hco.frequency_sq`, :func:`operators.hco.heat_conduction`), so it is exactly what a layer does
    to its (gated, normalised) features, with its t replaced by ``t``.
    """
    from operators.hco import frequency_sq, heat_conduction

    h, w = x0.shape[-2:]
    k = torch.as_tensor(k, dtype=torch.float32, device=x0.device)
    decay = torch.exp(-k * frequency_sq(h, w, x0.device) * t)  # (H, W) or (C, H, W)
    return heat_conduction(x0.float(), decay, "matrix")


def point_source(size: int, channels: int = 1, at: tuple[int, int] | None = None, device=None) -> Tensor:
    """(1, channels, size, size): zero everywhere, 1 at ``at`` (default: the centre)."""
    y, x = at if at is not None else (size // 2, size // 2)
    if not (0 <= y < size and 0 <= x < size):
        raise OptionError(f"--source {y},{x} is outside the {size}x{size} map")
    u = torch.zeros(1, channels, size, size, device=device)
    u[..., y, x] = 1.0
    return u


def hco_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    from operators.hco import HeatConduction

    return [(n, m) for n, m in net.named_modules() if isinstance(m, HeatConduction)]


def layer_conductivity(layer: nn.Module, h: int, w: int) -> tuple[Tensor, str]:
    """(k: scalar or (C, h, w), description) of one hco layer, with no gradient."""
    with torch.no_grad():
        k = layer.conductivity(h, w).float()
    if k.ndim == 0:
        return k, f"{layer.k_mode} k = {k.item():.3g}"
    return k, f"{layer.k_mode} k (mean {k.mean().item():.3g}, range {k.min().item():.2g}..{k.max().item():.2g})"


def cmd_heat(args: argparse.Namespace, device: torch.device) -> list[Path]:
    from sandbox.registry import build_mixer

    size = args.size or 64
    times = _parse_floats(args.times, "--times")
    at = tuple(_parse_ints(args.source, "--source")) if args.source else None
    if at is not None and len(at) != 2:
        raise OptionError(f"--source {args.source!r} is not valid; expected y,x")
    rows: list[tuple[str, Tensor | float]] = []  # (label, k)
    fixed = _parse_floats(args.k, "--k") if args.k else []
    layers: list[tuple[str, nn.Module]] = []
    if args.arch or args.checkpoint or (args.mixer and not args.mixer.startswith("hco")):
        net, label = load_net(args, device)
        layers = hco_layers(net)
        if not layers:
            raise SandboxError(f"{label} has no hco layer; give --k values for fixed conductivities only")
        layers = _pick(layers, _parse_ints(args.layers, "--layers"), args.max_layers, "hco layers")
    elif args.mixer:  # one fresh hco layer, e.g. --mixer hco:k_mode=learnable,k=0.5
        torch.manual_seed(args.seed)
        layers = [(args.mixer, build_mixer(args.mixer, args.dim).to(device).eval())]
    if not fixed and not layers:
        fixed = [1.0]
    rows += [(f"fixed k = {k:g}", k) for k in fixed]
    for name, layer in layers:
        k, what = layer_conductivity(layer, size, size)
        rows.append((f"{_short_name(name)}: {what}", k.to(device)))

    grid = []
    for _, k in rows:
        channels = k.shape[0] if isinstance(k, Tensor) and k.ndim == 3 else 1
        x0 = point_source(size, channels, at, device)
        grid.append([heat_response(x0, k, t)[0].mean(0).cpu().numpy() for t in times])  # channel mean (H, W)

    from sandbox.report import new_figure, save_figure

    fig = new_figure((2.6 * len(times) + 1.0, 2.5 * len(rows) + 0.6))
    for r, ((label, _), maps) in enumerate(zip(rows, grid)):
        for c, (t, u) in enumerate(zip(times, maps)):
            ax = fig.add_subplot(len(rows), len(times), r * len(times) + c + 1)
            ax.imshow(u, cmap="hot", vmin=0.0, vmax=max(float(u.max()), 1e-12), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t = {t:g}, peak {u.max():.2g}", fontsize=8)
            if c == 0:
                ax.set_ylabel("\n".join(_wrap(label, 28)), fontsize=7)
    fig.suptitle(f"point heat source on a {size}x{size} map (HCO operator, Neumann boundaries)", fontsize=9)
    out = _out_dir(args)
    png = save_figure(fig, out / "heat.png")
    table = [[lab] + [f"{u.max():.3g}" for u in maps] for (lab, _), maps in zip(rows, grid)]
    print(markdown_table(["k", *[f"peak at t={t:g}" for t in times]], table))
    return [png]


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


# ---------------------------------------------------------------------------------------------------- filters
def hyena_filters(net: nn.Module) -> list[tuple[str, nn.Module]]:
    from operators.hyena import HyenaFilter
    from operators.hyena_pixel import HyenaPixelFilter

    return [(n, m) for n, m in net.named_modules() if isinstance(m, (HyenaFilter, HyenaPixelFilter))]


def plot_filter(name: str, f: nn.Module, size: int, channels: int, path: Path, device: torch.device) -> Path:
    """Kernels of the first ``channels`` channels and their decays, for an input of ``size`` x ``size``."""
    from operators.hyena_pixel import HyenaPixelFilter
    from sandbox.report import new_figure, palette, save_figure

    shown = list(range(min(channels, f.channels)))
    colors = palette(len(shown))
    with torch.no_grad():
        if isinstance(f, HyenaPixelFilter):
            k = f.kernel(size, size, device).float().cpu()  # (C, 2ry + 1, 2rx + 1)
            ry, rx = k.shape[-2] // 2, k.shape[-1] // 2
            fig = new_figure((2.3 * len(shown), 5.2))
            gs = fig.add_gridspec(2, len(shown), height_ratios=(1.0, 0.8))
            for i, c in enumerate(shown):
                ax = fig.add_subplot(gs[0, i])
                lim = float(k[c].abs().max()) or 1.0
                ax.imshow(
                    k[c].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, extent=(-rx - 0.5, rx + 0.5, ry + 0.5, -ry - 0.5)
                )
                ax.set_title(f"channel {c}, |k| <= {lim:.2g}", fontsize=7)
                ax.tick_params(labelsize=6)
            ax = fig.add_subplot(gs[1, :])
            r = torch.linspace(0, math.hypot(ry, rx), 200)
            deltas = f.deltas.detach().float().abs().view(-1).cpu()
            shift = f.shift.detach().float().view(-1).cpu()
            for color, c in zip(colors, shown):
                ax.plot(r, torch.exp(-r * deltas[c] / f.decay_scale) + shift[c], color=color, label=f"channel {c}")
            ax.set_xlabel("distance from the kernel centre (px)")
            ax.set_ylabel("decay exp(-r |delta| / scale) + shift")
            ax.legend(fontsize=6, ncol=min(4, len(shown)))
            ax.grid(True, alpha=0.3)
            kind = f"HyenaPixel 2-D kernels ({2 * ry + 1} x {2 * rx + 1} taps) for a {size}x{size} input"
        else:  # 1-D Hyena filter over the raster order of an H x W image
            length = size * size
            h = f.kernel(length, device).float().cpu()  # (C, taps)
            n, start, taps = f.grid(length)
            window = f._window(n, start, taps, device).float().cpu()  # (C, taps)
            offsets = torch.arange(taps) - (taps // 2 if f.centred else 0)
            fig = new_figure((8.0, 5.5))
            ax1, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
            for color, c in zip(colors, shown):
                ax1.plot(offsets, h[c], color=color, linewidth=0.8, label=f"channel {c}")
                ax2.plot(offsets, window[c], color=color, linewidth=1.0)
            ax1.set_ylabel("filter h")
            ax1.legend(fontsize=6, ncol=min(4, len(shown)))
            ax2.set_ylabel("window (decay)")
            ax2.set_xlabel("tap offset in tokens (raster order; one image row = %d tokens)" % size)
            for ax in (ax1, ax2):
                ax.grid(True, alpha=0.3)
            mode = "centred" if f.centred else "causal"
            kind = f"Hyena 1-D {mode} filter ({taps} taps) for a {size}x{size} input (L = {length})"
    fig.suptitle(f"{name}: {kind}", fontsize=8)
    return save_figure(fig, path)


def cmd_filters(args: argparse.Namespace, device: torch.device) -> list[Path]:
    from sandbox.registry import build_mixer

    size = args.size or 32
    if args.arch or args.checkpoint:
        net, label = load_net(args, device)
    else:
        spec = args.mixer or "hyena_pixel"
        torch.manual_seed(args.seed)
        net, label = build_mixer(spec, args.dim).to(device).eval(), f"{spec} (fresh init)"
    filters = hyena_filters(net)
    if not filters:
        raise SandboxError(f"{label} has no Hyena / HyenaPixel filter (mixers hyena, hyena_bi, hyena_pixel)")
    filters = _pick(filters, _parse_ints(args.layers, "--layers"), args.max_layers, "Hyena filters")
    out = _out_dir(args)
    paths = []
    for i, (name, f) in enumerate(filters):
        title = f"{label} {_short_name(name)}".strip() if name else label
        png = out / f"filters_{i:02d}_{slug(name or label, empty='net')}.png"
        paths.append(plot_filter(title, f, size, args.channels, png, device))
    return paths


# ---------------------------------------------------------------------------------------------------- k
def predicted_k_maps(net: nn.Module, size: int, in_chans: int, device: torch.device) -> list[dict[str, Any]]:
    """k (C, h, w) of every hco layer with predicted k, on the grid it sees for a (1, in_chans, size, size) input.

    Returns dicts with ``name``, ``stage``, ``size`` (h, w) and ``k``.
    """
    layers = [(n, m) for n, m in hco_layers(net) if m.k_mode in ("predicted", "predicted_shared")]
    if not layers:
        modes = sorted({m.k_mode for _, m in hco_layers(net)})
        detail = f"its hco layers use k_mode {', '.join(map(repr, modes))}" if modes else "it has no hco layer"
        raise SandboxError(
            f"no predicted k to show: {detail}; predicted k needs k_mode 'predicted' or 'predicted_shared'"
        )
    seen: dict[str, tuple[int, int]] = {}

    def remember(name: str) -> Callable:
        def hook(_module: nn.Module, inputs: tuple) -> None:  # returns None: the inputs are left as they are
            seen.setdefault(name, tuple(inputs[0].shape[-2:]))

        return hook

    handles = [m.register_forward_pre_hook(remember(n)) for n, m in layers]
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_chans, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, m in layers:
        if name not in seen:
            continue
        h, w = seen[name]
        k, _ = layer_conductivity(m, h, w)
        out.append({"name": name, "stage": _stage_of(name), "size": (h, w), "k": k.cpu()})
    return out


def cmd_k(args: argparse.Namespace, device: torch.device) -> list[Path]:
    from sandbox.registry import ARCHS
    from sandbox.report import new_figure, save_figure

    net, label = load_net(args, device)
    family = ARCHS.entry(net.arch_spec["name"]).meta.get("family") if hasattr(net, "arch_spec") else None
    size = args.size or (224 if family == "classification" else 64)
    maps = predicted_k_maps(net, size, int(getattr(net, "in_chans", 3)), device)
    stages = list(dict.fromkeys(m["stage"] for m in maps))
    per_stage = {s: [m for m in maps if m["stage"] == s][: args.max_layers] for s in stages}
    cols = max(len(v) for v in per_stage.values())
    fig = new_figure((2.7 * cols + 0.8, 2.5 * len(stages) + 0.6))
    for r, s in enumerate(stages):
        for c, m in enumerate(per_stage[s]):
            ax = fig.add_subplot(len(stages), cols, r * cols + c + 1)
            km = m["k"].mean(0).numpy()  # (h, w), channel mean
            im = ax.imshow(km, cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
            ax.set_title(f"{_short_name(m['name'])}, {m['size'][0]}x{m['size'][1]}", fontsize=7)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel(f"{s}\nfrequency n", fontsize=7)
            if r == len(stages) - 1:
                ax.set_xlabel("frequency m", fontsize=7)
    fig.suptitle(f"predicted k (channel mean) of {label}, {size}x{size} input; DC at the top left", fontsize=8)
    out = _out_dir(args)
    png = save_figure(fig, out / f"k_{slug(label, empty='net')}.png")
    rows = [
        [m["stage"], m["name"], f"{m['size'][0]}x{m['size'][1]}", f"{m['k'].mean():.4g}", f"{m['k'].min():.4g}",
         f"{m['k'].max():.4g}", f"{m['k'][:, 0, 0].mean():.4g}"]
        for m in maps
    ]  # fmt: skip
    print(markdown_table(["stage", "layer", "grid", "k mean", "k min", "k max", "k at DC (mean)"], rows))
    return [png]


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)

    def network_args(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("network")
        g.add_argument("--arch", default=None, help="network spec (python -m sandbox archs); --mixer alone means ir")
        g.add_argument("--mixer", default=None, help="mixer spec, passed as the network's mixer=")
        g.add_argument("--preset", default=None, help="network preset (restoration: tiny, small, paper)")
        g.add_argument("--in-chans", type=int, default=None, help="image channels of a fresh network")
        g.add_argument("--checkpoint", default=None, help="checkpoint file or run directory (network rebuilt from it)")
        g.add_argument("--seed", type=int, default=0, help="seed of a fresh network's initialisation (default 0)")

    def layer_args(p: argparse.ArgumentParser, shown: str, fresh: str) -> None:  # heat and filters
        p.add_argument("--layers", default=None, help=f"indices of the {shown} shown (default: up to --max-layers)")
        p.add_argument("--max-layers", type=int, default=4, help=f"{shown} shown, evenly spaced (default 4)")
        p.add_argument("--dim", type=int, default=16, help=f"channels of {fresh} (default 16)")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available)")
        p.add_argument("--out", default=None, help="output folder (default outputs/visualize/<kind>_<timestamp>)")
        add_plugin_arg(p)

    p = sub.add_parser("erf", help="effective receptive field heat map of a network")
    network_args(p)
    p.add_argument("--images", type=int, default=8, help="images averaged over (default 8)")
    p.add_argument("--size", type=int, default=None, help="input side (default 128; 224 for classifiers)")
    p.add_argument("--layer", default=None, help="module whose output map is used ('output': the network output)")
    p.add_argument("--set", default=None, help="image set of the data root (default Set12 gray / CBSD68 color)")
    p.add_argument("--data-root", default=None, help="data folder (default $SANDBOX_DATA; none: skimage photos)")
    common(p)

    p = sub.add_parser("heat", help="a point heat source under fixed, learned or predicted k at several t")
    network_args(p)
    p.add_argument("--k", default=None, help="fixed conductivities, comma-separated (default 1 without a network)")
    p.add_argument("--times", default="1,4,16,64", help="diffusion times, comma-separated (default 1,4,16,64)")
    p.add_argument("--size", type=int, default=None, help="map side (default 64)")
    p.add_argument("--source", default=None, help="y,x of the point source (default: the centre)")
    layer_args(p, "hco layers", "a fresh --mixer hco layer")
    common(p)

    p = sub.add_parser("filters", help="Hyena / HyenaPixel filters and decays, of a network or a fresh mixer")
    network_args(p)
    p.add_argument("--size", type=int, default=None, help="input side the filters are made for (default 32)")
    p.add_argument("--channels", type=int, default=6, help="channels shown (default 6)")
    layer_args(p, "filters", "a fresh mixer")
    common(p)

    p = sub.add_parser("k", help="predicted k maps per stage of a vHeat / vHeatIR network")
    network_args(p)
    p.add_argument("--size", type=int, default=None, help="input side (default 64; 224 for classifiers)")
    p.add_argument("--max-layers", type=int, default=4, help="layers shown per stage (default 4)")
    common(p)
    return ap.parse_args(argv)


COMMANDS = {"erf": cmd_erf, "heat": cmd_heat, "filters": cmd_filters, "k": cmd_k}


def main(argv: Sequence[str] | None = None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    from sandbox import load_plugins, resolve_device

    args = parse_args(argv)
    load_plugins(args.plugin)
    for flag in ("size", "images", "channels", "max_layers", "dim", "in_chans"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise OptionError(f"--{flag.replace('_', '-')} {value} is not valid; expected an integer >= 1")
    device = resolve_device(args.device)
    paths = COMMANDS[args.kind](args, device)
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    run_main(main)
