"""Run configuration: checks, resolution (task, data root, evaluation sets, device, a resumed run's saved settings),
the network of a configuration, and the ``config.yaml`` of a run directory.

Everything here runs before a run directory exists, so that bad input fails with one line and writes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import LOSSES, RunConfig, apply_overrides, config_dict, load_config_file
from .errors import OptionError, SandboxError, check_choice, check_int, check_positive
from .utils import write_text_atomic

__all__ = [
    "CONFIG_FILE",
    "SHAPE_KEYS",
    "RESOLVED_KEYS",
    "RunSetup",
    "check_config",
    "build_task_from",
    "quick_eval_sets",
    "build_network",
    "read_run_config",
    "write_config",
    "same_json",
    "resolve_run",
]

CONFIG_FILE = "config.yaml"
# keys that define the network's shape or its task: a resumed run cannot change them
SHAPE_KEYS = ("task", "sigma", "quality", "arch", "mixer", "preset", "arch_options")
# keys a fresh run resolves (None -> the value used); a resume given None keeps the saved value
RESOLVED_KEYS = ("data_root", "train_sets", "eval_sets", "name", "device")


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
    from .networks import build_network_for
    from .registry import ARCHS, parse_spec
    from .tasks import check_network_channels

    task = task if task is not None else build_task_from(config)
    name = parse_spec(copy.deepcopy(config.arch), "network")[0]
    if ARCHS.entry(name).meta.get("family") == "classification":
        raise OptionError(
            f"network {name!r} is a classification network; training needs a restoration network "
            "(python -m sandbox archs --family restoration)"
        )
    entry_rng = torch.get_rng_state()
    net = build_network_for(
        config.arch, task, defaults={"mixer": config.mixer, "preset": config.preset}, overrides=config.arch_options
    )
    check_network_channels(task, getattr(net, "in_chans", task.channels))
    spec = getattr(net, "arch_spec", None)  # {"name": ..., **the options it was built with}
    if spec is not None and "mixer" in spec and not _all_identity(spec["mixer"]):
        _paired_init(net, {**spec, "mixer": "identity"}, entry_rng)
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


def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The saved configuration of a run directory (one-line error if it is not one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / CONFIG_FILE).is_file():
        raise SandboxError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE}); expected runs/<name>")
    return apply_overrides(RunConfig(), load_config_file(run_dir / CONFIG_FILE), f"run config {run_dir / CONFIG_FILE}")


def write_config(run_dir: Path, config: RunConfig) -> None:
    import yaml

    text = "# resolved RunConfig of this run (sandbox.engine); resume with experiments/run.py --resume <run dir>\n"
    write_text_atomic(run_dir / CONFIG_FILE, text + yaml.safe_dump(config_dict(config), sort_keys=False))


def same_json(a: Any, b: Any) -> bool:
    """Whether two plain values are equal as JSON (tuples and lists alike)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _merge_resume(saved: RunConfig, given: RunConfig | None) -> tuple[RunConfig, dict[str, Any]]:
    """The configuration a resumed run continues with, and what changed from the saved one."""
    if given is None:
        return saved, {}
    saved_d, given_d = config_dict(saved), config_dict(given)
    changes: dict[str, Any] = {}
    for key, old in saved_d.items():
        new = given_d[key]
        if same_json(old, new) or (key in RESOLVED_KEYS and new is None) or key in ("name", "out"):
            continue
        if key in SHAPE_KEYS:
            raise OptionError(
                f"cannot change {key} when resuming (the run has {key}={old!r}, got {new!r}); "
                f"a resumed run keeps its network and task: start a new run instead"
            )
        changes[key] = new
    return apply_overrides(saved, changes, "run config"), changes


# ----------------------------------------------------------------------------------------------------- resolution
def default_train_sets(task: Any) -> tuple[str, ...]:
    """The training sets of a run that names none: CBSD432 for color tasks, BSD400 for gray ones."""
    return ("CBSD432",) if task.color else ("BSD400",)


@dataclass
class RunSetup:
    """A run's configuration, checked and resolved, before anything is built or written."""

    config: RunConfig
    task: Any
    root: Path | None  # the data root (None: the embedded default)
    eval_sets: list[str] | None  # the final evaluation's sets (None: the embedded eval split)
    device: torch.device
    resume_dir: Path | None = None  # the run directory continued, if any
    checkpoint: dict | None = None  # its checkpoints/last.pth, read
    changes: dict[str, Any] = field(default_factory=dict)  # settings a resume changed from the saved ones

    @property
    def last_path(self) -> Path | None:
        return None if self.resume_dir is None else self.resume_dir / "checkpoints" / "last.pth"

    def resolved(self) -> dict[str, Any]:
        """The RunConfig fields a run fills in for ``config.yaml``: data root, and with one, the sets it used."""
        out: dict[str, Any] = {"data_root": str(self.root) if self.root is not None else None}
        if self.root is not None:
            out["eval_sets"] = tuple(self.eval_sets)
            out["train_sets"] = tuple(self.config.train_sets or default_train_sets(self.task))
        return out


def _read_resume(run_dir: Path, given: RunConfig | None) -> tuple[RunConfig, dict[str, Any], dict]:
    """A resumed run's configuration (the saved one with ``given``'s changes), the changes, and its last.pth."""
    from .checkpoint import torch_load

    saved = read_run_config(run_dir)
    last = run_dir / "checkpoints" / "last.pth"
    if not last.is_file():
        raise SandboxError(
            f"run directory {str(run_dir)!r} has no checkpoint yet (checkpoints/last.pth); start it again instead"
        )
    config, changes = _merge_resume(saved, given)
    ckpt = torch_load(last)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "step" not in ckpt:
        raise SandboxError(f"{str(last)!r} is not a sandbox training checkpoint (no 'model'/'step')")
    return config, changes, ckpt


def resolve_run(config: RunConfig | None, resume: str | os.PathLike | None) -> RunSetup:
    """Check ``config`` (or the saved configuration of the run directory ``resume``, with ``config``'s changes),
    load its plugins, and resolve its task, data root, evaluation sets and device; one-line errors throughout."""
    from .data import data_root, list_images
    from .plugins import load_plugins
    from .utils import resolve_device

    ckpt, changes = None, {}
    if resume is not None:
        config, changes, ckpt = _read_resume(Path(resume), config)
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
    for s in eval_sets or ():
        list_images(s, root)  # one-line error for a missing or empty set, before training
    device = resolve_device(config.device)
    resume_dir = Path(resume) if resume is not None else None
    return RunSetup(config, task, root, eval_sets, device, resume_dir, ckpt, changes)
