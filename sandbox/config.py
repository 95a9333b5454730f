"""Typed dataclass configs and checked overrides.

Configs are plain dataclasses with a default and a comment per field (nanoGPT's ``GPTConfig``). Overrides arrive as
a mapping (from keyword arguments, YAML or ``--set key=value``); :func:`apply_overrides` rejects unknown keys with a
close-match suggestion and values of the wrong type, naming the value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TypeVar

from .errors import OptionError

T = TypeVar("T")

__all__ = ["RunConfig", "apply_overrides", "config_dict", "parse_set"]


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits annotation ``tp``, the value converted: lists to tuples, ints to floats)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False, value
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif origin is list:
            args = (args[0] if args else Any,) * len(value)
        if len(args) != len(value):
            return False, value
        out = []
        for v, a in zip(value, args):
            ok, conv = _type_ok(v, a)
            if not ok:
                return False, value
            out.append(conv)
        return True, tuple(out) if origin is tuple else out
    if origin is not None:  # dict, Mapping, Literal...: accept as is
        return True, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def apply_overrides(cfg: T, overrides: Mapping[str, Any], what: str = "config") -> T:
    """A copy of dataclass ``cfg`` with ``overrides`` applied; unknown keys and mistyped values raise OptionError.

    Example messages: ``network config has no field 'embdim'; did you mean 'embed_dim'? fields: ...`` and
    ``embed_dim='wide' is not valid for network config; expected int``.
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise OptionError(f"{what} has no field {key!r}; {hint}fields: {', '.join(fields)}")
        ok, value = _type_ok(value, hints.get(key, Any))
        if not ok:
            raise OptionError(f"{key}={value!r} is not valid for {what}; expected {_describe(hints[key])}")
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def config_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with tuples turned into lists (YAML/JSON friendly)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def _field_is_tuple(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return True
    return any(_field_is_tuple(a) for a in typing.get_args(tp)) if origin is not None else False


def parse_set(items: Sequence[str], reserved: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``--set key=value`` items as RunConfig overrides, in order (a later item wins).

    Values are Python literals, else strings; ``a,b`` gives a tuple for tuple fields (``eval_sets=Set12,BSD68``);
    ``arch_options.KEY=VALUE`` merges into ``arch_options``. ``reserved`` maps keys the caller sets itself to the
    reason given in the error. Keys and types are checked later by :func:`apply_overrides`.
    """
    from .registry import _literal

    hints = typing.get_type_hints(RunConfig)
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise OptionError(f"--set {item!r} is not KEY=VALUE (e.g. --set lr=1e-3)")
        value = _literal(text.strip())
        if key.startswith("arch_options."):
            out.setdefault("arch_options", {})[key.split(".", 1)[1]] = value
            continue
        if reserved and key in reserved:
            raise OptionError(f"--set {key}=... is not allowed: {reserved[key]}")
        if isinstance(value, str) and key in hints and _field_is_tuple(hints[key]):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if key == "arch_options" and isinstance(value, dict):
            value = {**out.get("arch_options", {}), **value}
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------------ run config
LOSSES = ("l1", "l2", "charbonnier")  # RunConfig.loss, in both engines


@dataclass
class RunConfig:
    """Everything one training run needs (``experiments/run.py``, ``sandbox.engine.train``, the sweeps).

    Saved resolved in ``runs/<name>/config.yaml`` and inside every checkpoint, so a run can be resumed or evaluated
    without the original command line.
    """

    # what to train
    task: str = "denoise"  # task name or spec ("denoise", "jpeg_color:quality=20", "denoise:sigma_range=[0,55]")
    sigma: float | None = None  # shorthand for the task's sigma (denoise tasks)
    quality: int | None = None  # shorthand for the task's quality (jpeg tasks)
    arch: str = "ir"  # network registry key (python -m sandbox archs)
    mixer: Any = "hco"  # mixer spec for networks that take one (ir, metaformer): name, "name:k=v", dict, list
    preset: str = "tiny"  # network preset (restoration: paper, small, tiny); tiny keeps the default run ~5 min on CPU
    arch_options: dict = field(default_factory=dict)  # any other option of the network (embed_dim, depths, ...)
    # data
    data_root: str | None = None  # None: $SANDBOX_DATA, else the embedded scikit-image photographs
    train_sets: tuple[str, ...] | None = None  # None: BSD400 (gray) / CBSD432 (color); embedded split without data
    eval_sets: tuple[str, ...] | None = None  # None: the task's benchmarks; the embedded eval split without data
    val_images: int = 4  # periodic validation: the first N images of the first eval set, centre-cropped
    val_crop: int = 128  # side of the validation crops (0: whole images)
    patch_size: int = 48  # training patch side
    batch_size: int = 8
    workers: int = 0  # DataLoader worker processes (0: in the main process)
    # optimisation
    iters: int = 1200  # training iterations (the budget, if set, may stop earlier)
    budget_minutes: float | None = None  # wall-clock budget for training (evaluation excluded)
    optimizer: str = "adam"  # adam or adamw
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW (beta1, beta2); SwinIR's BasicSR options use (0.9, 0.99)
    schedule: str = "cosine"  # cosine or multistep
    warmup_iters: int = 0
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)  # multistep: fractions of iters
    gamma: float = 0.5  # multistep decay
    loss: str = "charbonnier"  # one of LOSSES: l1, l2 (MSE, as DnCNN) or charbonnier
    charbonnier_eps: float = 1e-3
    ema: float = 0.999  # EMA decay of the weights used for validation and the final evaluation (0: off)
    grad_clip: float | None = None  # max gradient norm (None: off)
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with bf16 instructions, else off), bf16 or off
    compile: bool = False  # torch.compile the network
    # bookkeeping
    seed: int = 0
    device: str | None = None  # None: $SANDBOX_DEVICE, else CUDA when available, else CPU
    out: str = "runs"  # parent folder of run directories
    name: str | None = None  # run directory name (None: <arch>_<mixer>_<task>_<timestamp>); never overwritten
    eval_every: int = 100  # validation period in iterations (0: only at the end)
    save_every: int = 100  # checkpoint period in iterations
    log_every: int = 10  # metrics.jsonl period in iterations
    plugins: tuple[str, ...] = ()  # modules that register mixers/networks/tasks (--plugin)
