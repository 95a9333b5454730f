"""BasicSR's own training loop on sandbox networks and tasks: ``python -m sandbox.compat.basicsr_train -opt FILE``.

The options file is the one :func:`sandbox.engine_basicsr.basicsr_options` writes (``<run dir>/basicsr_options.yml``);
it names types that exist only after this module ran: our networks (``SandboxIR``, ``VHeatIR``, ``SandboxSwinIR``,
registered by :mod:`sandbox.compat.basicsr`), our datasets (:class:`SandboxDegradationDataset`,
:class:`SandboxEvalDataset`) and, when the config needs it, :class:`SandboxSRModel`. Use this entry point wherever
BasicSR's documentation says ``basicsr/train.py``::

    python -m sandbox.compat.basicsr_train -opt runs/NAME/basicsr_options.yml [--auto_resume]
    torchrun --nproc_per_node=4 -m sandbox.compat.basicsr_train -opt runs/NAME/basicsr_options.yml --launcher pytorch

Fixes applied here to basicsr 1.4.2 on current torch, without editing site-packages (:func:`apply_fixes`):

1. ``basicsr/data/degradations.py`` line 8, ``from torchvision.transforms.functional_tensor import
   rgb_to_grayscale``, fails on torchvision >= 0.17 (module removed; BasicSR issue #649) and with it ``import
   basicsr``: :func:`sandbox.compat.install_torchvision_shim` registers the module first.
2. Resume on CPU. ``basicsr/train.py`` ``load_resume_state``, lines 85-86::

       device_id = torch.cuda.current_device()
       resume_state = torch.load(resume_state_path, map_location=lambda storage, loc: storage.cuda(device_id))

   ``torch.cuda.current_device()`` raises without CUDA (``RuntimeError: Found no NVIDIA driver on your system``,
   or "Torch not compiled with CUDA enabled"), and the map_location would move every tensor to a GPU anyway.
   :func:`load_resume_state` replaces that module-level function (``train_pipeline`` looks it up at call time): it
   maps to ``cpu`` when ``num_gpu`` is 0 or CUDA is unavailable (to the current GPU otherwise) and loads with
   ``weights_only=True``. That works: a state is ``{"epoch", "iter", "optimizers": [Adam state_dict],
   "schedulers": [scheduler state_dict]}`` of tensors, numbers, bools, lists, tuples, dicts and, for
   ``MultiStepRestartLR``, a ``collections.Counter`` (its milestones), all on torch's weights-only allowlist (checked
   on torch 2.14). ``BaseModel.resume_training`` (``models/base_model.py`` line 340) only receives that dict;
   ``optimizer.load_state_dict`` moves the Adam moments onto the parameters' device. ``BaseModel.load_network``
   (line 290, ``net_g_*.pth``) calls ``torch.load`` without ``weights_only``; torch >= 2.6 defaults it to ``True``,
   which loads the ``{"params": ..., "params_ema": ...}`` dicts fine, so it is left alone.
3. Working-directory independence. ``utils/options.py`` ``parse_options`` line 158 rebuilds every experiment path
   as ``osp.join(root_path, 'experiments', opt['name'], ...)`` (the file's ``path`` section is overwritten) with
   ``root_path`` = ``basicsr/..`` when run as ``basicsr/train.py``; ``train.py`` line 71 looks for
   ``--auto_resume`` states in ``osp.join('experiments', opt['name'], 'training_states')``, relative to the
   *working directory*, not to ``root_path``: from any other directory ``--auto_resume`` silently starts from
   scratch, and ``make_exp_dirs`` -> ``utils/misc.py`` ``mkdir_and_rename`` then renames the existing experiment to
   ``<name>_archived_<time>``. :func:`main` passes ``root_path`` = the run directory named by the file's
   ``root_path`` key (absolute; a relative one is taken relative to the options file), so every derived path is
   absolute, and :func:`load_resume_state` scans ``opt['path']['training_states']`` (absolute) instead.
4. Resuming with a larger ``total_iter``. ``BaseModel.resume_training`` line 353,
   ``self.schedulers[i].load_state_dict(s)``, restores the *old* schedule's shape along with its counters (the
   whole ``__dict__``: ``periods``/``cumulative_period`` of ``CosineAnnealingRestartLR``, ``milestones`` of
   ``MultiStepRestartLR``), so the new ``total_iter`` is ignored and past the old end ``lr_scheduler.py`` line 87
   (``get_position_from_periods`` returns None) makes line 88 ``self.restart_weights[idx]`` raise ``TypeError: list
   indices must be integers or slices, not NoneType``. :func:`load_resume_state` drops the shape keys
   (:data:`SCHEDULE_KEYS`) from the saved scheduler states, so the options' schedule applies and only the position
   (``last_epoch``, ``_step_count``, ``base_lrs``, ``_last_lr``) is restored.
5. (Ours.) ``train.py`` calls ``train_sampler.set_epoch(epoch)`` on its ``EnlargedSampler``, which the dataset
   never sees; :func:`apply_fixes` makes ``EnlargedSampler.set_epoch`` also call the dataset's ``set_epoch`` so
   that :class:`SandboxDegradationDataset` seeds each item from (seed, epoch, index). After a resume BasicSR restarts
   the saved epoch from its first batch; the dataset also mixes the resumed iteration into its seeds, so those
   batches are fresh patches, not replays.

``--launcher pytorch`` needs CUDA (basicsr's ``init_dist`` uses NCCL and ``torch.cuda.set_device``).
"""

from __future__ import annotations

import os
import sys
from os import path as osp
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils import data as torch_data

from . import basicsr as _registrations  # noqa: F401  (torchvision shim, then our networks in ARCH_REGISTRY)

__all__ = [
    "SandboxDegradationDataset",
    "SandboxEvalDataset",
    "SandboxSRModel",
    "apply_fixes",
    "load_resume_state",
    "SCHEDULE_KEYS",
    "register",
    "root_path_of",
    "main",
]


def _plain_spec(spec: Any) -> Any:
    return dict(spec) if isinstance(spec, dict) else spec


def _tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) array -> (C, H, W) float32 tensor (uint8 scaled to [0, 1], floats kept)."""
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(x))


def dihedral(img: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 dihedral transforms of an (H, W[, C]) array: rotation by ``mode % 4`` quarter turns, then a
    horizontal flip when ``mode >= 4``."""
    out = np.rot90(img, mode % 4, axes=(0, 1))
    return out[:, ::-1] if mode >= 4 else out


# ---------------------------------------------------------------------------------------------------- datasets
class SandboxDegradationDataset(torch_data.Dataset):
    """Training pairs in BasicSR's format: random ``patch_size`` patches of the training images with one of the 8
    dihedral augmentations, degraded on the fly by a sandbox task.

    Options (the ``datasets.train`` section): ``task`` (spec, e.g. ``{"name": "denoise", "sigma": 25}``),
    ``data_root`` (None: the embedded scikit-image training split), ``train_sets`` (None: BSD400 for gray tasks,
    CBSD432 for color ones), ``patch_size``, ``seed``, ``patches_per_epoch`` (the length of an epoch; None: one
    patch per image), ``augment`` (default true) and ``resume_iter`` (set when resuming, so that a resumed run draws
    fresh patches instead of replaying the first ones of its epoch).

    Item ``i`` of epoch ``e`` comes from image ``i % n_images`` and draws its crop, augmentation and degradation
    from ``numpy.random.default_rng([seed, resume_iter, e, i])``: the same run sees the same patches whatever the
    number of workers. Returns ``{"lq": (C, P, P), "gt": (C, P, P), "lq_path": str, "gt_path": str}``, float32,
    ``gt`` in [0, 1], RGB for color tasks.
    """

    def __init__(self, opt: dict[str, Any]) -> None:
        from ..data import data_root, embedded_split, list_images
        from ..errors import SandboxError
        from ..registry import build_task

        self.opt = opt
        self.task = build_task(_plain_spec(opt["task"]))
        self.patch_size = int(opt["patch_size"])
        self.seed = int(opt.get("seed", 0))
        self.augment = bool(opt.get("augment", True))
        self.resume_iter = int(opt.get("resume_iter", 0) or 0)
        self.epoch = 0
        root = data_root(opt["data_root"]) if opt.get("data_root") else None  # None: embedded, even if $SANDBOX_DATA
        self.items: list[tuple[str, np.ndarray | Path]] = []
        if root is None:
            self.items = [(f"embedded/{name}", img) for name, img in embedded_split(color=self.task.color)[0]]
        else:
            default = "CBSD432" if self.task.color else "BSD400"
            for set_name in opt.get("train_sets") or [default]:
                self.items += [(f"{set_name}/{p.name}", p) for p in list_images(set_name, root)]
        if not self.items:
            raise SandboxError(f"no training images for task {self.task.name!r}")
        self.length = int(opt.get("patches_per_epoch") or len(self.items))

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Called through ``EnlargedSampler.set_epoch`` (see :func:`apply_fixes`) before each epoch."""
        self.epoch = int(epoch)

    def _image(self, source: np.ndarray | Path) -> np.ndarray:
        if isinstance(source, np.ndarray):
            return source
        from ..data import read_image

        return read_image(source, gray=not self.task.color)  # (H, W) or (H, W, 3) RGB uint8

    def __getitem__(self, index: int) -> dict[str, Any]:
        from ..errors import SandboxError

        name, source = self.items[index % len(self.items)]
        img = self._image(source)
        rng = np.random.default_rng([self.seed, self.resume_iter, self.epoch, int(index)])
        p = self.patch_size
        h, w = img.shape[:2]
        if h < p or w < p:
            raise SandboxError(f"training image {name} is {h}x{w}, smaller than patch_size={p}")
        top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        patch = img[top : top + p, left : left + p]
        if self.augment:
            patch = dihedral(patch, int(rng.integers(0, 8)))
        gt = _tensor(np.ascontiguousarray(patch))  # (C, P, P) in [0, 1]
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        lq = self.task.degrade_batch(gt[None], generator=generator)[0]  # (C, P, P)
        return {"lq": lq, "gt": gt, "lq_path": name, "gt_path": name}


class SandboxEvalDataset(torch_data.Dataset):
    """Validation pairs in BasicSR's format: the evaluation protocol's (ground truth, degraded) pair
    (:meth:`sandbox.tasks.Task.prepare_eval`) of the first ``val_images`` images of ``eval_set``, centre-cropped
    to ``val_crop`` (0: whole images) before degrading.

    Options: ``task``, ``data_root`` (None: the embedded evaluation split), ``eval_set`` (None: the task's first
    benchmark), ``val_images``, ``val_crop``. Items: ``{"lq", "gt", "lq_path", "gt_path"}``, (C, H, W) float32.
    """

    def __init__(self, opt: dict[str, Any]) -> None:
        from ..data import data_root
        from ..evaluate import _images
        from ..registry import build_task

        self.opt = opt
        self.task = build_task(_plain_spec(opt["task"]))
        root = data_root(opt["data_root"]) if opt.get("data_root") else None  # None: embedded, even if $SANDBOX_DATA
        sets = None if root is None else [opt.get("eval_set") or self.task.benchmarks[0]]
        count = int(opt.get("val_images", 4))
        self.items = _images(self.task, sets, root)[:count]  # (set, image name, loader) as the evaluator reads them
        self.crop = int(opt.get("val_crop", 0) or 0)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        set_name, image, load = self.items[index]
        img = load()  # as cv2 reads it: (H, W) gray or (H, W, 3) BGR uint8
        if self.crop:
            h, w = img.shape[:2]
            ch, cw = min(self.crop, h), min(self.crop, w)
            top, left = (h - ch) // 2, (w - cw) // 2
            img = np.ascontiguousarray(img[top : top + ch, left : left + cw])
        gt, lq = self.task.prepare_eval(img)  # gt uint8, lq float32 (RGB for color)
        path = f"{set_name}/{image}"
        return {"lq": _tensor(lq), "gt": _tensor(gt), "lq_path": path, "gt_path": path}


# ------------------------------------------------------------------------------------------------------- model
def _model_class():
    from basicsr.models.sr_model import SRModel

    class SandboxSRModel(SRModel):
        """BasicSR's ``SRModel`` plus what a RunConfig may ask for and SRModel lacks: ``optim_g.type: AdamW`` and
        ``train.grad_clip`` (max gradient norm, applied just before each optimizer step)."""

        def get_optimizer(self, optim_type, params, lr, **kwargs):
            if optim_type == "AdamW":
                return torch.optim.AdamW(params, lr, **kwargs)
            return super().get_optimizer(optim_type, params, lr, **kwargs)

        def setup_optimizers(self):
            super().setup_optimizers()
            clip = self.opt["train"].get("grad_clip")
            if clip:
                params = [p for p in self.net_g.parameters() if p.requires_grad]

                def clip_gradients(optimizer, args, kwargs):
                    torch.nn.utils.clip_grad_norm_(params, float(clip))

                self.optimizer_g.register_step_pre_hook(clip_gradients)

    SandboxSRModel.__module__ = __name__
    return SandboxSRModel


SandboxSRModel = _model_class()


def register() -> None:
    """Register our datasets and model in BasicSR's registries (idempotent)."""
    from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

    for cls in (SandboxDegradationDataset, SandboxEvalDataset):
        if cls.__name__ not in DATASET_REGISTRY:
            DATASET_REGISTRY.register(cls)
    if SandboxSRModel.__name__ not in MODEL_REGISTRY:
        MODEL_REGISTRY.register(SandboxSRModel)


# ------------------------------------------------------------------------------------------------------- fixes
SCHEDULE_KEYS = ("periods", "cumulative_period", "restart_weights", "eta_min", "milestones", "gamma", "restarts")


def load_resume_state(opt: dict[str, Any]) -> dict[str, Any] | None:
    """``basicsr.train.load_resume_state`` that works on CPU, from any working directory and with a changed
    ``total_iter`` (fixes 2, 3 and 4).

    ``--auto_resume`` takes the newest ``<iter>.state`` in ``opt['path']['training_states']`` (absolute) instead of
    ``experiments/<name>/training_states`` under the working directory; the state loads with ``weights_only=True``
    onto the CPU when the model runs there, onto the current GPU otherwise.
    """
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt["auto_resume"]:
        state_path = opt["path"]["training_states"]
        if osp.isdir(state_path):
            states = [float(v.split(".state")[0]) for v in scandir(state_path, suffix="state", recursive=False)]
            if states:
                resume_state_path = osp.join(state_path, f"{max(states):.0f}.state")
                opt["path"]["resume_state"] = resume_state_path
    elif opt["path"].get("resume_state"):
        resume_state_path = opt["path"]["resume_state"]
    if resume_state_path is None:
        return None
    if opt.get("num_gpu", 0) and torch.cuda.is_available():
        map_location = torch.device("cuda", torch.cuda.current_device())
    else:
        map_location = torch.device("cpu")
    resume_state = torch.load(resume_state_path, map_location=map_location, weights_only=True)
    for scheduler_state in resume_state.get("schedulers", []):  # fix 4: the options' schedule, the saved position
        for key in SCHEDULE_KEYS:
            scheduler_state.pop(key, None)
    check_resume(opt, resume_state["iter"])
    train_set = opt.get("datasets", {}).get("train")
    if train_set is not None:  # fresh patches after a resume (BasicSR replays the epoch from its start)
        train_set["resume_iter"] = int(resume_state["iter"])
    return resume_state


_FIXED = False


def apply_fixes() -> None:
    """Patch basicsr 1.4.2 in memory (see the module docstring); idempotent. Also registers our types."""
    global _FIXED
    register()
    if _FIXED:
        return
    import basicsr.train as basicsr_train
    from basicsr.data.data_sampler import EnlargedSampler

    basicsr_train.load_resume_state = load_resume_state  # fixes 2 and 3 (train_pipeline looks it up at call time)

    original_set_epoch = EnlargedSampler.set_epoch

    def set_epoch(self, epoch):  # fix 4: let the dataset see the epoch
        original_set_epoch(self, epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    EnlargedSampler.set_epoch = set_epoch
    _FIXED = True


def root_path_of(opt_file: str | os.PathLike) -> Path:
    """The run directory an options file belongs to: its ``root_path`` key (relative paths are relative to the
    file), else the folder of the file. Always absolute."""
    import yaml

    opt_file = Path(opt_file).expanduser().resolve()
    with open(opt_file) as f:
        opt = yaml.safe_load(f) or {}
    root = opt.get("root_path")
    if not root:
        return opt_file.parent
    root = Path(root).expanduser()
    return root if root.is_absolute() else (opt_file.parent / root).resolve()


def _opt_argument(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "-opt" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("-opt="):
            return arg[len("-opt=") :]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m sandbox.compat.basicsr_train -opt FILE [--launcher none|pytorch|slurm] [--auto_resume]`` (the
    arguments of ``basicsr/train.py``). Loads the plugins the file names (``sandbox.plugins``), applies the fixes and
    runs ``basicsr.train.train_pipeline(root_path)`` with the run directory as ``root_path``."""
    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    opt_file = _opt_argument(argv)
    if opt_file is None:
        raise SystemExit("usage: python -m sandbox.compat.basicsr_train -opt FILE [--launcher pytorch] [--auto_resume]")
    with open(opt_file) as f:
        opt = yaml.safe_load(f) or {}
    plugins = (opt.get("sandbox") or {}).get("plugins") or []
    if plugins:
        from ..plugins import load_plugins

        load_plugins(plugins)
    apply_fixes()
    from basicsr.train import train_pipeline

    root_path = str(root_path_of(opt_file))
    sys.argv = [sys.argv[0], *argv]  # parse_options reads sys.argv
    train_pipeline(root_path)


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy, so that pickled datasets (spawned DataLoader workers under
    # --launcher pytorch) and the registries refer to ``sandbox.compat.basicsr_train``.
    from sandbox.compat.basicsr_train import main as _main

    _main()
