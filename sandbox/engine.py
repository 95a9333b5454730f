"""The training engine: one :class:`~sandbox.config.RunConfig` in, one run directory out.

    >>> from sandbox.config import RunConfig
    >>> from sandbox.engine import train
    >>> result = train(RunConfig(mixer="hco", preset="tiny", iters=500))
    >>> result.final                       # {set: {"psnr", "ssim", "input_psnr", "images"}}
    >>> train(None, resume=result.run_dir)  # continue (e.g. after a crash) to the same result

A run directory ``<out>/<name>/`` (never overwritten: a taken name becomes ``<name>-2``, ``<name>-3``, ...) holds

- ``config.yaml``: the resolved configuration (data root, sets and name filled in);
- ``checkpoints/last.pth`` and ``checkpoints/best.pth``: self-describing dicts (``arch_spec``, ``config``, ``model``
  (training weights), ``ema`` and ``model_ema`` (EMA weights, or no ``model_ema`` when ``ema == 0``), ``optimizer``,
  ``scheduler``, ``step``, ``best_psnr``, ``rng``, ``history``, ``wall``), written atomically. ``load_checkpoint`` and
  ``experiments/evaluate.py --weights`` pick ``model_ema`` before ``model``, so they evaluate the EMA weights;
- ``metrics.jsonl``: one JSON object per event (``start``, ``resume``, ``train``, ``val``, ``stop``, ``final``);
- ``results.json`` / ``results.md``: the final evaluation per set beside the degraded input, params, MACs, speeds;
- ``per_image.csv``: the final evaluation per image (``set, image, degradation, psnr, ssim, [psnrb,] input_psnr,
  seconds``; :func:`sandbox.evaluate.read_per_image` reads it back), for paired comparisons between runs;
- ``crops.png``: the same crop of a few evaluation images, clean / degraded / restored.

Every random draw of iteration ``step`` comes from a generator seeded by ``(seed, step)`` alone, and the global RNG
states travel in the checkpoints, so a resumed run draws the same batches and ends with the same weights as an
uninterrupted one (and the number of DataLoader workers does not change the batches). Runs of one seed that differ
in their setting (e.g. the mixer) are paired: they draw the same patches and noise / JPEG qualities (the per-step
generator serves nothing else) and start from the same initialisation wherever shapes allow (:func:`build_network`),
so that their differences come from the setting alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import re
import signal
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .config import LOSSES, RunConfig, apply_overrides, config_dict
from .errors import OptionError, SandboxError, check_choice, check_int, check_positive

__all__ = [
    "RunResult",
    "TrainingDiverged",
    "train",
    "build_network",
    "build_task_from",
    "check_config",
    "load_config_file",
    "read_run_config",
    "PatchBatches",
    "step_seed",
    "SHAPE_KEYS",
]

CHECKPOINT_VERSION = 1
CONFIG_FILE = "config.yaml"
# keys that define the network's shape or its task: a resumed run cannot change them
SHAPE_KEYS = ("task", "sigma", "quality", "arch", "mixer", "preset", "arch_options")
# keys a fresh run resolves (None -> the value used); a resume given None keeps the saved value
RESOLVED_KEYS = ("data_root", "train_sets", "eval_sets", "name", "device")
KILL_ENV = "SANDBOX_TEST_KILL_AT_STEP"  # tests: SIGKILL the process right after last.pth of this step is saved
MACS_SIZE = 256  # MACs and inference time are measured on a 1 x C x 256 x 256 input
BF16_CPU_NOTE = "this CPU has no bf16 instructions: amp=bf16 is emulated, likely slower than fp32; use amp=auto/off"
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo: x86 AVX512_BF16 and AMX-BF16; ARM BF16


def _cpu_flags() -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo (x86 ``flags``, ARM ``Features``), or None where it is not readable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512_BF16 or AMX-BF16, ARM BF16).

    oneDNN also accepts bf16 on any AVX512 CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is True there) but
    emulates it: on such a CPU (Xeon with AVX512 and VNNI, no AVX512_BF16; 2026-12-07) a bf16 GEMM of the recipe
    network's shapes took 3 to 5 times as long as fp32, and a bf16-autocast training step of the small network about
    twice as long (docs/performance.md). Where /proc/cpuinfo is not readable, oneDNN's answer is used.
    """
    flags = _cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the query: assume yes rather than warn wrongly
        return True


def use_bf16(amp: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: ``bf16`` always; ``auto`` on CUDA and on CPUs with bf16
    instructions (where it is the faster choice); ``off`` never."""
    return amp == "bf16" or (amp == "auto" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())))


# ------------------------------------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """What :func:`train` returns (also written to ``results.json``)."""

    run_dir: Path
    config: RunConfig
    step: int  # iterations done
    best_psnr: float  # best validation PSNR (dB)
    final: dict  # {set: {"psnr", "ssim", ("psnrb",) "input_psnr", "images"}} of the final evaluation
    history: list[dict] = field(default_factory=list)  # validation points {"step", "wall", "psnr", "ssim"}
    params: int = 0
    macs_per_mpx: int = 0  # multiply-adds per megapixel (count_macs at 1 x C x 256 x 256, times 16)
    train_iters_per_sec: float = 0.0
    infer_ms_per_mpx: float = 0.0  # median forward time on a 256 x 256 input, per megapixel
    stopped: str = "iters"  # iters, budget, nan, pruned, interrupted


class TrainingDiverged(SandboxError):
    """The loss, the gradients or the weights became nan/inf; the message names the last good checkpoint."""


# ------------------------------------------------------------------------------------------------- configuration
def _is_decay(value: Any) -> bool:
    """A number in [0, 1): an EMA or Adam beta decay."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def check_config(config: RunConfig) -> None:
    """Raise a one-line :class:`OptionError` for a value outside what training accepts."""
    if not isinstance(config, RunConfig):
        raise OptionError(f"expected a RunConfig, got {type(config).__name__}")
    c = config
    check_int("iters", c.iters, minimum=1)
    check_int("batch_size", c.batch_size, minimum=1)
    check_int("patch_size", c.patch_size, minimum=8)
    check_int("workers", c.workers, minimum=0)
    check_int("val_images", c.val_images, minimum=1)
    check_int("val_crop", c.val_crop, minimum=0)
    check_int("warmup_iters", c.warmup_iters, minimum=0)
    check_int("eval_every", c.eval_every, minimum=0, hint=" (0: validate only at the end)")
    check_int("save_every", c.save_every, minimum=0, hint=" (0: save only at the end)")
    check_int("log_every", c.log_every, minimum=1)
    check_positive("lr", c.lr)
    check_positive("weight_decay", c.weight_decay, allow_zero=True)
    if len(c.betas) != 2 or not all(map(_is_decay, c.betas)):
        raise OptionError(f"betas={c.betas!r} is not valid; expected two decays in [0, 1), e.g. 0.9,0.99")
    check_positive("gamma", c.gamma)
    check_positive("charbonnier_eps", c.charbonnier_eps)
    if c.budget_minutes is not None:
        check_positive("budget_minutes", c.budget_minutes)
    if c.grad_clip is not None:
        check_positive("grad_clip", c.grad_clip)
    if not _is_decay(c.ema):
        raise OptionError(f"ema={c.ema!r} is not valid; expected a decay in [0, 1) (0: off; e.g. 0.999)")
    check_choice("optimizer", c.optimizer, ("adam", "adamw"))
    check_choice("schedule", c.schedule, ("cosine", "multistep", "constant"))
    check_choice("loss", c.loss, LOSSES)
    check_choice("amp", c.amp, ("auto", "bf16", "off"))
    if not all(0 < m <= 1 for m in c.milestones):
        raise OptionError(f"milestones={c.milestones!r} is not valid; expected fractions of iters in (0, 1]")
    if c.name is not None and (not c.name or c.name in (".", "..") or re.search(r"[/\\\x00]", c.name)):
        raise OptionError(f"name={c.name!r} is not a valid run directory name (no slashes)")
    if not isinstance(c.out, str) or not c.out:
        raise OptionError(f"out={c.out!r} is not valid; expected the parent folder of run directories")


def build_task_from(config: RunConfig):
    """The task of ``config``: ``config.task`` (a name or spec) with the ``sigma``/``quality`` shorthands applied."""
    from .registry import build_task

    options = {}
    if config.sigma is not None:
        options["sigma"] = config.sigma
    if config.quality is not None:
        options["quality"] = config.quality
    return build_task(copy.deepcopy(config.task), **options)


def quick_eval_sets(config: RunConfig) -> RunConfig:
    """``config`` evaluating the task's first benchmark only (Set12 for denoise) when it names no eval sets and a
    data root exists: the default of run.py and the sweeps, which keeps a run short (BSD68 alone takes minutes on 2
    CPU cores). Without data (the embedded split) or with eval sets given, ``config`` is returned as it is."""
    from .data import data_root
    from .plugins import load_plugins

    if config.eval_sets is not None:
        return config
    load_plugins(list(config.plugins))
    task = build_task_from(config)
    if data_root(config.data_root) is None or not task.benchmarks:
        return config  # the embedded default
    return dataclasses.replace(config, eval_sets=(task.benchmarks[0],))


def build_network(config: RunConfig, task: Any = None) -> nn.Module:
    """The network of ``config``, initialised from the global torch RNG.

    ``build_arch({"name": config.arch, **opts})`` where ``opts`` holds ``mixer``, ``preset``, ``in_chans`` (the task's
    channels), ``task`` (the task's name) and, for networks with a noise-level input, ``sigma``, each only when the
    network takes that option, then the options of an ``arch`` spec string, then ``config.arch_options``.

    The initialisation is paired across mixers: for a network with a ``mixer`` option, everything but the mixers'
    own parameters is what the same RNG state gives the network with identity mixers (:func:`_paired_init`), so
    two settings of one seed that differ in the mixer start from the same MLPs, norms and convs.
    """
    from .registry import ARCHS, build_arch, parse_spec
    from .tasks import check_network_channels

    task = task if task is not None else build_task_from(config)
    name, spec_options = parse_spec(copy.deepcopy(config.arch), "network")
    entry = ARCHS.entry(name)
    if entry.meta.get("family") == "classification":
        raise OptionError(
            f"network {name!r} is a classification network; training needs a restoration network "
            "(python -m sandbox archs --family restoration)"
        )
    accepted = entry.options()
    options: dict[str, Any] = {}
    if "mixer" in accepted:
        options["mixer"] = copy.deepcopy(config.mixer)
    if "preset" in accepted:
        options["preset"] = config.preset
    if "in_chans" in accepted:
        options["in_chans"] = task.channels
    if "task" in accepted:
        options["task"] = task.name
    if entry.meta.get("sigma_input") and getattr(task, "sigma", None) is not None:
        options["sigma"] = task.sigma
    options.update(spec_options)
    options.update(copy.deepcopy(dict(config.arch_options)))
    entry_rng = torch.get_rng_state()
    net = build_arch({"name": name, **options})
    check_network_channels(task, getattr(net, "in_chans", task.channels))
    if "mixer" in options and not _all_identity(options["mixer"]):
        _paired_init(net, {"name": name, **options, "mixer": "identity"}, entry_rng)
    return net


def _all_identity(mixer: Any) -> bool:
    """Whether a mixer option (one spec, or nested lists of specs) names the identity mixer everywhere."""
    from .registry import parse_spec

    if isinstance(mixer, (list, tuple)):
        return all(_all_identity(m) for m in mixer)
    try:
        return parse_spec(copy.deepcopy(mixer), "mixer")[0] == "identity"
    except SandboxError:
        return False


@torch.no_grad()
def _paired_init(net: nn.Module, reference_spec: dict[str, Any], entry_rng: torch.Tensor) -> list[str]:
    """Give ``net`` the initialisation every mixer shares under the same seed; returns the names copied.

    Mixers draw different amounts of random numbers while they are built, so without this the parameters built after
    the first mixer (the MLPs and norms of every block, the groups' convs, ``conv_after_body``, ``conv_last``) would
    differ between two settings of the same seed, and a comparison of mixers would also compare initialisations.
    Here the network is built once more from the global torch RNG state it was built from (``entry_rng``), with
    ``mixer="identity"`` everywhere (``reference_spec``; identity has no parameters and draws no random numbers, and
    the identity network of ``ir`` has the same module names apart from the mixers' own), and every parameter and
    buffer whose qualified name and shape match is copied into ``net``. The mixers' own parameters and those only
    the mixer brings (e.g. the frequency embedding hco blocks share per group, ``layers.g.freq_embed``) keep what the
    seed gave them when ``net`` was built, so they too are a function of (seed, setting) alone.

    The global torch RNG is left where building the reference left it, which is the same for every mixer: what the
    training draws from it afterwards (stochastic depth) starts from the same state in every setting.

    The other half of the pairing needs nothing here: every training patch, flip and noise / JPEG-quality draw of
    iteration ``step`` comes from :class:`PatchBatches`' own generator seeded by ``step_seed(seed, step)``, created
    in ``__getitem__`` and handed to ``task.degrade_batch`` only; neither the network build nor the training step
    consumes it (they use the global RNG), so all settings of one seed see identical batches.

    Cost: one more build of the network without its mixers (milliseconds at the tiny and small presets). A resumed run
    loads its weights over the network, so there the pairing changes nothing. If the network does not build with the
    identity mixer (a plugin network that rejects it), ``net`` keeps its own initialisation, with a warning.
    """
    import warnings

    from .registry import build_arch

    after_own = torch.get_rng_state()
    torch.set_rng_state(entry_rng)
    try:
        reference = build_arch(reference_spec)
    except Exception as e:  # noqa: BLE001  (any plugin failure: the network stays usable, only unpaired)
        torch.set_rng_state(after_own)
        warnings.warn(
            f"network {reference_spec['name']!r} does not build with mixer='identity' ({type(e).__name__}: {e}); "
            "its initialisation is not paired across mixers",
            stacklevel=3,
        )
        return []
    own = dict(net.named_parameters(remove_duplicate=False))
    own.update(net.named_buffers(remove_duplicate=False))
    copied = []
    for key, value in [*reference.named_parameters(), *reference.named_buffers()]:
        target = own.get(key)
        if target is not None and target.shape == value.shape:
            target.copy_(value)
            copied.append(key)
    return copied


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping of RunConfig fields; a syntax error is one line naming the file and the line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SandboxError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise SandboxError(f"config file {str(path)!r}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SandboxError(
            f"config file {str(path)!r} holds a {type(data).__name__}; expected a mapping of RunConfig fields "
            "(e.g. `iters: 500`)"
        )
    return dict(data)


def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The saved configuration of a run directory (one-line error if it is not one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / CONFIG_FILE).is_file():
        raise SandboxError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE}); expected runs/<name>")
    return apply_overrides(RunConfig(), load_config_file(run_dir / CONFIG_FILE), f"run config {run_dir / CONFIG_FILE}")


def _write_config(run_dir: Path, config: RunConfig) -> None:
    import yaml

    from .evaluate import write_text_atomic

    text = "# resolved RunConfig of this run (sandbox.engine); resume with experiments/run.py --resume <run dir>\n"
    write_text_atomic(run_dir / CONFIG_FILE, text + yaml.safe_dump(config_dict(config), sort_keys=False))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _merge_resume(saved: RunConfig, given: RunConfig | None) -> tuple[RunConfig, dict[str, Any]]:
    """The configuration a resumed run continues with, and what changed from the saved one."""
    if given is None:
        return saved, {}
    saved_d, given_d = config_dict(saved), config_dict(given)
    changes: dict[str, Any] = {}
    for key, old in saved_d.items():
        new = given_d[key]
        if _same(old, new) or (key in RESOLVED_KEYS and new is None) or key in ("name", "out"):
            continue
        if key in SHAPE_KEYS:
            raise OptionError(
                f"cannot change {key} when resuming (the run has {key}={old!r}, got {new!r}); "
                f"a resumed run keeps its network and task: start a new run instead"
            )
        changes[key] = new
    return apply_overrides(saved, changes, "run config"), changes


# --------------------------------------------------------------------------------------------------------- data
def step_seed(seed: int, step: int) -> int:
    """The seed of iteration ``step``'s generator: a function of (seed, step) only."""
    return (int(seed) * 1_000_003 + int(step)) % (1 << 63)


def _read_train_image(path: Path, color: bool) -> np.ndarray:
    """(H, W, C) uint8: RGB for color tasks, gray (BT.601 Y of color sources) for gray ones."""
    import cv2

    from .data import imread
    from .tasks import bgr_to_y_uint8

    if color:
        return np.ascontiguousarray(imread(path, cv2.IMREAD_COLOR)[..., ::-1])
    img = imread(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 2 and img.dtype == np.uint8:
        return img[..., None]
    return bgr_to_y_uint8(imread(path, cv2.IMREAD_COLOR))[..., None]


def _train_images(task: Any, config: RunConfig, root: Path | None) -> tuple[list[np.ndarray], str]:
    """The training images, (H, W, C) uint8 each, in memory, and a one-line description."""
    from .data import ALL_SETS, embedded_split, list_images
    from .tasks import rgb_to_y_uint8

    images: list[tuple[str, np.ndarray]] = []
    if root is None:
        for name, img in embedded_split()[0]:
            if task.color:
                if img.ndim == 2:
                    continue  # gray-only source: not replicated into color training data
                images.append((name, img))
            else:
                images.append((name, (rgb_to_y_uint8(img) if img.ndim == 3 else img)[..., None]))
        where = "embedded train split"
    else:
        sets = list(config.train_sets or (("CBSD432",) if task.color else ("BSD400",)))
        for s in sets:
            info = ALL_SETS.get(s)
            if task.color and info is not None and not info.color:
                raise SandboxError(
                    f"train set {s} is gray; task {task.name!r} trains on color images (e.g. train_sets=CBSD432)"
                )
            images += [(p.name, _read_train_image(p, task.color)) for p in list_images(s, root)]
        where = ", ".join(sets)
    p = config.patch_size
    kept = [(n, im) for n, im in images if min(im.shape[:2]) >= p]
    if not kept:
        sides = min((min(im.shape[:2]) for _, im in images), default=0)
        raise SandboxError(
            f"patch_size={p} is larger than every training image ({where}: smallest side {sides}); "
            f"use a smaller --patch-size"
        )
    skipped = len(images) - len(kept)
    note = f" ({skipped} smaller than the patch skipped)" if skipped else ""
    return [im for _, im in kept], f"{where}: {len(kept)} images{note}"


class PatchBatches(torch.utils.data.Dataset):
    """Item ``step`` is iteration ``step``'s batch ``(clean, degraded)``, each (B, C, P, P) float in [0, 1] (degraded
    not clipped). Patches are drawn uniformly (image, position, one of the 8 flips/rotations), then degraded with
    ``task.degrade_batch``, all from one generator seeded by :func:`step_seed` ``(seed, step)``: the batch of a step
    never depends on what was drawn before it, on resuming, or on the DataLoader's worker count."""

    def __init__(self, images: list[np.ndarray], task: Any, patch_size: int, batch_size: int, seed: int) -> None:
        self.images, self.task, self.patch, self.batch, self.seed = images, task, patch_size, batch_size, seed

    def __len__(self) -> int:  # steps are 1-based; any step is valid
        return 1 << 62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(step_seed(self.seed, step))
        b, p = self.batch, self.patch
        index = torch.randint(len(self.images), (b,), generator=g).tolist()
        where = torch.rand((b, 2), generator=g, dtype=torch.float64).tolist()
        modes = torch.randint(8, (b,), generator=g).tolist()
        patches = []
        for i, (u, v), mode in zip(index, where, modes):
            img = self.images[i]  # (H, W, C) uint8
            h, w = img.shape[:2]
            y, x = min(int(u * (h - p + 1)), h - p), min(int(v * (w - p + 1)), w - p)
            patch = np.rot90(img[y : y + p, x : x + p], mode % 4, axes=(0, 1))
            patches.append(patch[:, ::-1] if mode >= 4 else patch)
        arr = np.ascontiguousarray(np.stack(patches))  # (B, P, P, C) uint8
        clean = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (B, C, P, P)
        degraded = self.task.degrade_batch(clean, g)
        return clean, degraded


def _worker_init(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def _batches(dataset: PatchBatches, start: int, stop: int, workers: int):
    """Batches of steps start..stop (inclusive), from a DataLoader when ``workers > 0``."""
    if workers == 0:
        return (dataset[s] for s in range(start, stop + 1))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, stop + 1),
        num_workers=workers,
        worker_init_fn=_worker_init,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # its base seed must not come from (and advance) the global RNG
    )
    return iter(loader)


def _crop_centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def _val_items(task: Any, root: Path | None, eval_sets: list[str] | None, count: int, crop: int):
    """(name, gt uint8, degraded float32) of the first ``count`` images of the first eval set, centre-cropped."""
    from .evaluate import _images

    items = _images(task, eval_sets[:1] if eval_sets else None, root)[:count]
    out = []
    for _, name, load in items:
        img = load()
        gt, degraded = task.prepare_eval(_crop_centre(img, crop) if crop else img)
        out.append((name, gt, degraded))
    return out


# ------------------------------------------------------------------------------------------------ optimisation
class EMA:
    """Exponential moving average of a network's parameters (buffers copied); ``module`` has the same state_dict
    keys as the network. The decay warms up as ``min(decay, (1 + step) / (10 + step))``, so that short runs do not
    average in their first, untrained weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        mine, theirs = list(self.module.parameters()), [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(mine, theirs, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)


def lr_factor(config: RunConfig, it: int, wall: float = 0.0) -> float:
    """Learning-rate factor of the iteration after ``it`` completed ones: linear warm-up, then cosine to 0, multistep
    (milestones are fractions of the run) or constant.

    The run's progress is ``it / iters``, or, with a budget, the larger of that and ``wall / budget``: a budget-bound
    run decays its learning rate to the end of its budget instead of stopping at a high rate half-way through a
    schedule laid out for ``iters``. ``wall`` is the training time in seconds so far.
    """
    w = config.warmup_iters
    if w and it < w:
        return (it + 1) / w
    t = min(1.0, (it - w) / max(1, config.iters - w))
    if config.budget_minutes:
        t = max(t, min(1.0, wall / (config.budget_minutes * 60.0)))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if config.schedule == "multistep":
        return config.gamma ** sum(t >= m for m in config.milestones)
    return 1.0


def _loss(out: torch.Tensor, target: torch.Tensor, config: RunConfig) -> torch.Tensor:
    diff = out.float() - target.float()
    if config.loss == "l1":
        return diff.abs().mean()
    if config.loss == "l2":
        return (diff * diff).mean()
    return torch.sqrt(diff * diff + config.charbonnier_eps**2).mean()


# ----------------------------------------------------------------------------------------------- RNG, checkpoints
def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain lists (``torch.load(weights_only=True)`` reads them)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pstate, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [version, list(pstate), gauss_next],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, pstate, gauss_next = state["python"]
    random.setstate((version, tuple(pstate), gauss_next))


def _finite_weights(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _plain(obj: Any) -> Any:
    """JSON-safe: tuples to lists, non-finite floats to None, paths to strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _plain(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _Events:
    """metrics.jsonl: one JSON object per line, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rewind(self, step: int) -> int:
        """Drop the events logged after iteration ``step`` (a resumed run continues from its checkpoint at ``step``:
        what a killed process logged past it belongs to a timeline that no longer exists); returns how many."""
        if not self.path.is_file():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        keep = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if record.get("event") in ("train", "val", "stop") and record.get("step", 0) > step:
                continue
            keep.append(line)
        dropped = len(lines) - len(keep)
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
            os.replace(tmp, self.path)
        return dropped

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_plain(record), allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _new_run_dir(config: RunConfig, default_name: str) -> Path:
    """Create ``<out>/<name>`` (or ``<name>-2``, ``-3``, ... if taken) atomically and return it."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    base = config.name or default_name
    i = 1
    while True:
        candidate = out / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1


def _default_name(config: RunConfig, task: Any) -> str:
    from .registry import parse_spec

    arch, arch_options = parse_spec(config.arch, "network")
    parts = [arch]
    mixer = arch_options.get("mixer", config.mixer)
    if isinstance(mixer, (str, Mapping)):
        try:
            parts.append(parse_spec(mixer, "mixer")[0])
        except SandboxError:
            pass
    elif isinstance(mixer, (list, tuple)):
        parts.append("mixed")
    parts += [task.name, task.level.replace("sigma=", "s").replace("q=", "q"), time.strftime("%Y%m%d-%H%M%S")]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))


# ------------------------------------------------------------------------------------------------- measurements
@torch.no_grad()
def _restore(net: nn.Module, degraded: np.ndarray, device: torch.device) -> np.ndarray:
    from .evaluate import network_restorer

    return network_restorer(net, device)(degraded)


def _validate(net: nn.Module, items: list, device: torch.device) -> dict[str, float]:
    from .evaluate import to_uint8
    from .metrics import psnr, ssim

    was_training = net.training
    try:
        scores = []
        for _, gt, degraded in items:
            out = to_uint8(_restore(net, degraded, device))
            scores.append((psnr(out, gt), ssim(out, gt)))
    finally:
        net.train(was_training)
    return {"psnr": float(np.mean([s[0] for s in scores])), "ssim": float(np.mean([s[1] for s in scores]))}


def _crops_png(path: Path, net: nn.Module, items: list, device: torch.device, size: int = 128) -> None:
    """Rows of [clean | degraded | restored], the same centre crop of each of the first 3 validation images."""
    import cv2

    from .evaluate import to_uint8

    rows = []
    for _, gt, degraded in items[:3]:
        out = to_uint8(_restore(net, degraded, device))
        tiles = [_crop_centre(a, size) for a in (gt, to_uint8(degraded), out)]
        gap = np.full((tiles[0].shape[0], 4, *tiles[0].shape[2:]), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1))
    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], *r.shape[2:]), 255, np.uint8)
        padded += [np.concatenate([r, pad], axis=1), np.full((4, width, *r.shape[2:]), 255, np.uint8)]
    grid = np.concatenate(padded[:-1], axis=0)
    grid = grid if grid.ndim == 2 else np.ascontiguousarray(grid[..., ::-1])  # RGB -> BGR for cv2
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), grid):
        raise SandboxError(f"could not write {path}")
    os.replace(tmp, path)


@torch.no_grad()
def _infer_ms_per_mpx(net: nn.Module, channels: int, device: torch.device, repeats: int = 3) -> float:
    x = torch.rand((1, channels, MACS_SIZE, MACS_SIZE), generator=torch.Generator().manual_seed(0)).to(device)
    net.eval()
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        net(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first pass warms caches up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0 / (MACS_SIZE * MACS_SIZE / 1e6)


# --------------------------------------------------------------------------------------------------------- train
class _StopFlag:
    """Ctrl-C once: stop after the current iteration (checkpoint saved); twice: KeyboardInterrupt."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.set = False
        self.echo = echo
        self.previous = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.echo("interrupt: stopping after this iteration and saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(
    config: RunConfig | None,
    on_eval: Callable[[int, dict], None] | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> RunResult:
    """Train ``config`` in a new run directory, or continue the run directory ``resume``.

    Args:
        config: the run configuration. With ``resume`` it may be None (the saved configuration); otherwise it must
            match the saved one in :data:`SHAPE_KEYS`, and other differences (e.g. a larger ``iters`` or
            ``budget_minutes``) are applied and logged. None-valued ``data_root``/``train_sets``/``eval_sets``
            keep the saved values.
        on_eval: ``on_eval(step, {"psnr", "ssim", "step", "wall", "iters_per_sec"})`` after each validation. If it
            raises (e.g. ``optuna.TrialPruned``), ``last.pth`` is saved, ``stopped="pruned"`` is logged and the
            exception propagates.
        resume: a run directory (``config.yaml`` and ``checkpoints/last.pth``).
        progress: tqdm bars for training and the final evaluation.
        echo: where the summary lines go (default: ``print`` when ``progress``, else nowhere).

    Raises:
        TrainingDiverged: the loss, gradients or weights became nan/inf (``stopped="nan"``); the message names the
            last good checkpoint, which is never overwritten after the divergence.
        SandboxError: bad configuration, data or resume directory, before anything is written.
    """
    from .checkpoint import load_checkpoint, save_atomic, torch_load
    from .complexity import count_macs, count_params, human
    from .data import EMBEDDED_NOTE, data_root
    from .evaluate import PER_IMAGE_FILE, evaluate, network_restorer, write_text_atomic
    from .plugins import load_plugins
    from .utils import resolve_device

    if echo is None:
        echo = print if progress else (lambda _: None)

    # ---- configuration, task, data, network: everything is checked before the run directory exists
    ckpt = None
    changes: dict[str, Any] = {}
    if resume is not None:
        run_dir = Path(resume)
        saved = read_run_config(run_dir)
        last = run_dir / "checkpoints" / "last.pth"
        if not last.is_file():
            raise SandboxError(
                f"run directory {str(run_dir)!r} has no checkpoint yet (checkpoints/last.pth); start it again instead"
            )
        config, changes = _merge_resume(saved, config)
        ckpt = torch_load(last)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "step" not in ckpt:
            raise SandboxError(f"{str(last)!r} is not a sandbox training checkpoint (no 'model'/'step')")
    elif config is None:
        raise OptionError("train() needs a RunConfig (or resume=<run dir>)")
    check_config(config)
    load_plugins(list(config.plugins))
    task = build_task_from(config)
    if resume is not None:  # a resumed run reads the data it was started with (None: the embedded default)
        root = data_root(config.data_root) if config.data_root else None
    else:
        root = data_root(config.data_root)
    if root is None and (config.train_sets or config.eval_sets) and resume is None:
        raise SandboxError(
            "train_sets/eval_sets name benchmark sets, which need a data root (set SANDBOX_DATA or --data-root); "
            "without one the embedded default is used: leave them unset"
        )
    eval_sets = list(config.eval_sets or task.benchmarks) if root is not None else None
    if root is not None:
        from .data import list_images

        for s in eval_sets:
            list_images(s, root)  # one-line error for a missing or empty set, before training
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (1 << 32))
    random.seed(config.seed)
    net = build_network(config, task)
    if ckpt is not None:
        spec = ckpt.get("arch_spec")
        if spec is not None and not _same(spec, getattr(net, "arch_spec", spec)):
            raise SandboxError(
                f"checkpoint {str(last)!r} is of another network ({spec}) than the run's config builds "
                f"({net.arch_spec}); was config.yaml edited?"
            )
        load_checkpoint(net, ckpt, param_key="model", strict=True)
    images, data_desc = _train_images(task, config, root)
    val_items = _val_items(task, root, eval_sets, config.val_images, config.val_crop)
    params = count_params(net)

    # ---- the run directory
    resolved = {"data_root": str(root) if root is not None else None}
    if root is not None:
        resolved["eval_sets"] = tuple(eval_sets)
        resolved["train_sets"] = tuple(config.train_sets or (("CBSD432",) if task.color else ("BSD400",)))
    if resume is None:
        run_dir = _new_run_dir(config, _default_name(config, task))
        resolved["name"] = run_dir.name
    config = dataclasses.replace(config, **resolved)
    if resume is None or changes:
        _write_config(run_dir, config)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    last_path, best_path = ckpt_dir / "last.pth", ckpt_dir / "best.pth"
    events = _Events(run_dir / "metrics.jsonl")
    bar = None

    # ---- optimiser, EMA, state
    net.to(device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(trainable, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    ema = EMA(net, config.ema) if config.ema > 0 else None
    step, wall, best_psnr, history = 0, 0.0, -math.inf, []
    if ckpt is not None:
        if ema is not None and ckpt.get("ema") is not None:
            load_checkpoint(ema.module, ckpt["ema"], strict=True)
        elif ema is not None:
            ema.module.load_state_dict(net.state_dict())
        optimizer.load_state_dict(ckpt["optimizer"])
        step, wall = int(ckpt["step"]), float(ckpt.get("wall", 0.0))
        best_psnr = float(ckpt.get("best_psnr", -math.inf))
        history = [dict(h) for h in ckpt.get("history", [])]
        _set_rng_state(ckpt["rng"])
    eval_net = ema.module if ema is not None else net
    train_net = torch.compile(net) if config.compile else net
    use_amp = use_bf16(config.amp, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else nullcontext
    start_step, start_wall = step, wall
    arch_spec = getattr(net, "arch_spec", {"name": config.arch})

    def checkpoint() -> dict[str, Any]:
        ema_state = ema.module.state_dict() if ema is not None else None
        state = {
            "version": CHECKPOINT_VERSION,
            "arch_spec": arch_spec,
            "config": config_dict(config),
            "task": task.spec,
            "model": net.state_dict(),
            "ema": ema_state,
            "optimizer": optimizer.state_dict(),
            "scheduler": {"name": config.schedule, "lr": optimizer.param_groups[0]["lr"], "step": step},
            "step": step,
            "best_psnr": best_psnr,
            "rng": _rng_state(),
            "history": history,
            "wall": wall,
        }
        if ema_state is not None:
            state["model_ema"] = ema_state  # load_checkpoint reads model_ema before model: evaluation uses the EMA
        return state

    saved_step = step if ckpt is not None else None

    def save_last() -> None:
        nonlocal saved_step
        if not _finite_weights(net):
            diverged("the weights", float("nan"), step)
        save_atomic(checkpoint(), last_path)
        saved_step = step
        if os.environ.get(KILL_ENV) and int(os.environ[KILL_ENV]) == step:
            os.kill(os.getpid(), signal.SIGKILL)  # tests: a crash right after a checkpoint

    def diverged(what: str, value: float, iteration: int | None = None) -> None:
        iteration = step + 1 if iteration is None else iteration
        kind = "nan" if math.isnan(value) else "inf"
        events("stop", stopped="nan", step=step, iteration=iteration, what=what)
        if bar is not None:
            bar.close()
        if saved_step is None:
            where = "no checkpoint was saved before it"
        else:
            where = f"the last good checkpoint is {_relative(last_path)} (step {saved_step})"
        raise TrainingDiverged(
            f"{what} became {kind} at iteration {iteration}; {where} (lower --lr or set --set grad_clip=1.0)"
        )

    # ---- summary
    mixer_txt = f", mixer {config.mixer}" if "mixer" in arch_spec else ""
    budget_txt = f", budget {config.budget_minutes:g} min" if config.budget_minutes else ""
    echo(
        f"{'resuming' if resume is not None else 'run'} {_relative(run_dir)} at step {step}\n"
        f"  network: {arch_spec.get('name')}{mixer_txt}, preset {arch_spec.get('preset', '-')}: "
        f"{human(params)} params\n"
        f"  task: {task.describe()}\n"
        f"  data: {data_desc}; validation: {len(val_items)} image(s) of "
        f"{eval_sets[0] if eval_sets else 'the embedded eval split'}"
        f"{f' (centre {config.val_crop}px)' if config.val_crop else ''}; final: "
        f"{', '.join(eval_sets) if eval_sets else 'embedded eval split'}\n"
        f"  training: {config.iters} iters{budget_txt}, batch {config.batch_size} x {config.patch_size}px, "
        f"{config.optimizer} lr {config.lr:g} {config.schedule}, {config.loss}, ema {config.ema:g}, "
        f"seed {config.seed}, device {device}{', bf16' if use_amp else ''}"
        + (f"\n  changed on resume: {changes}" if changes else "")
        + (f"\n  note: {EMBEDDED_NOTE}" if root is None else "")
        + (f"\n  note: {BF16_CPU_NOTE}" if use_amp and device.type == "cpu" and not cpu_has_bf16() else "")
    )
    if resume is None:
        events("start", config=config_dict(config), params=params, device=str(device), data=data_desc)
    else:
        dropped = events.rewind(step)
        events("resume", step=step, changes=changes, device=str(device), dropped_events=dropped)

    def validate_and_report() -> dict[str, float]:
        """Validation at ``step``: history, best.pth, last.pth, then on_eval."""
        nonlocal best_psnr
        scores = _validate(eval_net, val_items, device)
        rate = (step - start_step) / (wall - start_wall) if wall > start_wall else 0.0
        point = {"step": step, "wall": wall, "psnr": scores["psnr"], "ssim": scores["ssim"]}
        history.append(point)
        events("val", **point, iters_per_sec=rate)
        if scores["psnr"] > best_psnr:
            best_psnr = scores["psnr"]
            if _finite_weights(net):
                save_atomic(checkpoint(), best_path)
        return {**scores, "step": step, "wall": wall, "iters_per_sec": rate}

    # ---- training
    if progress and step < config.iters:
        try:
            from tqdm import tqdm

            bar = tqdm(total=config.iters, initial=step, desc=run_dir.name, unit="it", dynamic_ncols=True)
        except ImportError:
            bar = None
    dataset = PatchBatches(images, task, config.patch_size, config.batch_size, config.seed)
    stopped = "iters" if step >= config.iters else None
    budget_s = config.budget_minutes * 60.0 if config.budget_minutes else None
    if budget_s is not None and wall >= budget_s and step < config.iters:
        stopped = "budget"
    window_loss, window_n, window_t = 0.0, 0, 0.0
    last_val = history[-1]["psnr"] if history else None
    net.train()
    try:
        with _StopFlag(echo) as interrupt:
            batches = _batches(dataset, step + 1, config.iters, config.workers) if stopped is None else iter(())
            t0 = time.perf_counter()  # the budget counts making the batch and the step, not validation/saving
            for clean, degraded in batches:
                clean = clean.to(device, non_blocking=True)
                degraded = degraded.to(device, non_blocking=True)
                lr = config.lr * lr_factor(config, step, wall)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast():
                    out = train_net(degraded)
                loss = _loss(out, clean, config)
                value = loss.item()
                if not math.isfinite(value):
                    diverged("loss", value)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip))
                    if not math.isfinite(norm):
                        diverged("the gradients", norm)
                optimizer.step()
                step += 1
                if ema is not None:
                    ema.update(net, step)
                if device.type == "cuda" and step % config.log_every == 0:
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - t0
                wall += dt
                window_loss, window_n, window_t = window_loss + value, window_n + 1, window_t + dt

                if step % config.log_every == 0:
                    events(
                        "train",
                        step=step,
                        loss=window_loss / window_n,
                        lr=lr,
                        wall=wall,
                        iters_per_sec=window_n / window_t if window_t > 0 else 0.0,
                    )
                    window_loss, window_n, window_t = 0.0, 0, 0.0
                if budget_s is not None and wall >= budget_s and step < config.iters:
                    stopped = "budget"
                elif step >= config.iters:
                    stopped = "iters"
                if interrupt.set:
                    if saved_step != step:
                        save_last()
                    stopped = "interrupted"
                    break
                metrics = None
                if (config.eval_every and step % config.eval_every == 0) or stopped:
                    metrics = validate_and_report()
                    last_val = metrics["psnr"]
                if (config.save_every and step % config.save_every == 0) or stopped:
                    save_last()
                if bar is not None:
                    post = f"loss {value:.4g}" + (f", val {last_val:.2f} dB" if last_val is not None else "")
                    bar.set_postfix_str(post, refresh=False)
                    bar.update(1)
                if metrics is not None and on_eval is not None:
                    try:
                        on_eval(step, metrics)
                    except BaseException:
                        if saved_step != step:
                            save_last()
                        events("stop", stopped="pruned", step=step)
                        raise
                if stopped:
                    break
                t0 = time.perf_counter()
    except KeyboardInterrupt:
        events("stop", stopped="interrupted", step=step, saved_step=saved_step)
        raise
    finally:
        if bar is not None:
            bar.close()

    if stopped is None:  # the loader ended without reaching iters (cannot happen unless iters shrank)
        stopped = "iters"
    if stopped != "interrupted":
        if not history or history[-1]["step"] != step:  # e.g. resumed at the end: validate once
            validate_and_report()
        if saved_step != step:
            save_last()
    rate = step / wall if wall > 0 else 0.0
    events("stop", stopped=stopped, step=step, wall=wall, iters_per_sec=rate)
    if stopped == "interrupted":
        echo(f"interrupted at iteration {step}; continue with: python experiments/run.py --resume {run_dir}")
        return RunResult(run_dir, config, step, best_psnr, {}, history, params, 0, rate, 0.0, stopped)

    # ---- final evaluation with the EMA (or the final) weights
    result = evaluate(network_restorer(eval_net, device), task, eval_sets, root, method=run_dir.name, progress=progress)
    final = result.summary()
    result.write_csv(run_dir / PER_IMAGE_FILE)  # before results.json, which names it (rewritten by a resumed run)
    macs = count_macs(eval_net, (1, task.channels, MACS_SIZE, MACS_SIZE), device) * 16
    infer = _infer_ms_per_mpx(eval_net, task.channels, device)
    _crops_png(run_dir / "crops.png", eval_net, val_items, device)
    out = RunResult(run_dir, config, step, best_psnr, final, history, params, macs, rate, infer, stopped)
    record = {
        "run_dir": str(run_dir),
        "config": config_dict(config),
        "arch_spec": arch_spec,
        "task": task.describe(),
        "step": step,
        "stopped": stopped,
        "best_psnr": best_psnr,
        "final": final,
        "per_image": PER_IMAGE_FILE,
        "history": history,
        "params": params,
        "macs_per_mpx": macs,
        "train_iters_per_sec": rate,
        "infer_ms_per_mpx": infer,
        "wall": wall,
        "eval_seconds": result.seconds,
        "device": str(device),
        "weights": "ema" if ema is not None else "final",
        "note": result.note,
    }
    write_text_atomic(run_dir / "results.json", json.dumps(_plain(record), indent=2, allow_nan=False) + "\n")
    write_text_atomic(run_dir / "results.md", results_markdown(out, result.table(), task.describe(), result.note))
    events("final", final=final, params=params, macs_per_mpx=macs, infer_ms_per_mpx=infer, eval_seconds=result.seconds)
    return out


def results_markdown(result: RunResult, table: str, task: str, note: str = "") -> str:
    """The results.md text: the per-set table, then the network's size and speed."""
    from .complexity import human

    weights = "EMA" if result.config.ema > 0 else "final"
    lines = [
        f"# {result.run_dir.name}",
        "",
        f"{task}; {weights} weights after {result.step} iterations (stopped: {result.stopped}).",
        "",
        table,
        "",
        "| params | MACs / Mpx | train it/s | inference ms / Mpx | best val PSNR |",
        "|---:|---:|---:|---:|---:|",
        f"| {human(result.params)} | {human(result.macs_per_mpx)} | {result.train_iters_per_sec:.2f} | "
        f"{result.infer_ms_per_mpx:.0f} | {result.best_psnr:.2f} |",
    ]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use experiments/run.py")
