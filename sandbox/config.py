"""Typed dataclass configs and checked overrides.

Configs are plain dataclasses with a default and a comment per field (nanoGPT's ``GPTConfig``). Overrides arrive as
a mapping (from keyword arguments, YAML or ``--set key=value``); :func:`apply_overrides` rejects unknown keys with a
close-match suggestion and values of the wrong type, naming the value and what would be accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .errors import OptionError, SandboxError

T = TypeVar("T")

__all__ = [
    "RunConfig",
    "add_config_flags",
    "apply_overrides",
    "command_overrides",
    "config_dict",
    "flag_overrides",
    "load_config_file",
    "parse_set",
    "set_names",
]


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits annotation ``tp``, the value converted: lists to tuples, ints to floats)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return _union_ok(value, typing.get_args(tp))
    if origin in (tuple, list):
        return _sequence_ok(value, origin, typing.get_args(tp))
    if origin is not None:  # dict, Mapping, Literal...: accept as is
        return True, value
    return _scalar_ok(value, tp)


def _union_ok(value: Any, options: tuple) -> tuple[bool, Any]:
    """The first member of a union that ``value`` fits, converted as that member converts it."""
    for arg in options:
        ok, v = _type_ok(value, arg)
        if ok:
            return True, v
    return False, value


def _sequence_ok(value: Any, origin: type, args: tuple) -> tuple[bool, Any]:
    """``value`` as ``tuple[A, B]``, ``tuple[A, ...]`` or ``list[A]``: every item checked and converted."""
    if not isinstance(value, (tuple, list)):
        return False, value
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


def _scalar_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """``value`` as a plain type: bools are not ints, ints become floats for float fields."""
    if tp is type(None):
        return value is None, value
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
        parse = fields[key].metadata.get("parse")
        if parse is not None and isinstance(value, str):  # text as the field's flag reads it (YAML eval_sets: all)
            value = parse(value)
        ok, value = _type_ok(value, hints.get(key, Any))
        if not ok:
            raise OptionError(f"{key}={value!r} is not valid for {what}; expected {_describe(hints[key])}")
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def config_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with tuples turned into lists (YAML/JSON friendly)."""
    from .utils import plain

    return plain(dataclasses.asdict(cfg))


def _field_is_tuple(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return True
    return any(_field_is_tuple(a) for a in typing.get_args(tp)) if origin is not None else False


def _declared_parse(key: str) -> Callable[[str], Any] | None:
    """The ``parse`` declared for RunConfig field ``key`` (how its flag reads text), if any."""
    return next((f.metadata.get("parse") for f in dataclasses.fields(RunConfig) if f.name == key), None)


def parse_set(items: Sequence[str], reserved: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``--set key=value`` items as RunConfig overrides, in order (a later item wins).

    Values are Python literals, else strings; ``a,b`` gives a tuple for tuple fields (``eval_sets=Set12,BSD68``), and
    a field with a declared ``parse`` reads the text as its flag does (``eval_sets=all``: every benchmark, None);
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
        parse = _declared_parse(key)
        if parse is not None and isinstance(value, str):  # as the field's flag reads it (eval_sets=all: None)
            value = parse(text.strip())
        elif isinstance(value, str) and key in hints and _field_is_tuple(hints[key]):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if key == "arch_options" and isinstance(value, dict):
            value = {**out.get("arch_options", {}), **value}
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------------ run config
LOSSES = ("l1", "l2", "charbonnier")  # RunConfig.loss, in both engines

# The sections of RunConfig: argparse groups of the commands' --help
WHAT, DATA, OPTIM, BOOKKEEPING = "what to train", "data", "optimisation", "bookkeeping"


def set_names(text: str) -> tuple[str, ...] | None:
    """The value of ``--eval-sets``: comma-separated benchmark sets; ``all`` (or nothing) is ``None``, every
    benchmark of the task (RunConfig's meaning of ``eval_sets=None``)."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    return None if names in ((), ("all",)) else names


def setting(default: Any = dataclasses.MISSING, help: str = "", *, group: str, flag: bool = False, **extra: Any):
    """A RunConfig field with its declaration: ``help`` (the one description of the setting, shown by --help),
    ``group`` (the section), ``flag`` (whether the commands take it as ``--name-with-dashes``; every field is also a
    YAML key and a ``--set`` key) and, in ``extra``, ``parse`` (the flag's text to a value, instead of the type's).
    A list or dict default becomes a ``default_factory``."""
    meta = {"help": help, "group": group, "flag": flag, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything one training run needs (``experiments/run.py``, ``sandbox.engine.train``, the sweeps).

    Each field is declared once, with its help: that declaration is the field's YAML key (``--config FILE.yaml``,
    ``runs/<name>/config.yaml``), its ``--set key=value`` key, its sweep parameter key (``key:`` in a study file) and,
    for ``flag=True``, the ``--flag`` of run.py, compare.py and sweep.py (:func:`add_config_flags`). Saved resolved in
    ``runs/<name>/config.yaml`` and inside every checkpoint, so a run can be resumed or evaluated without the
    original command line.
    """

    # what to train
    task: str = setting(
        "denoise",
        "task name or spec: denoise, denoise_color, jpeg, jpeg_color, 'denoise:sigma_range=[0,55]'",
        group=WHAT,
        flag=True,
    )
    sigma: float | None = setting(
        None, "noise level on the 0-255 scale (denoise tasks; None: the task's, 25)", group=WHAT, flag=True
    )
    quality: int | None = setting(None, "JPEG quality 1..100 (jpeg tasks; None: the task's, 10)", group=WHAT, flag=True)
    arch: str = setting("ir", "network registry key or spec (python -m sandbox archs)", group=WHAT, flag=True)
    mixer: Any = setting(
        "hco",
        "mixer for networks that take one (ir, metaformer): name or 'name:key=value,...'; in YAML also a dict "
        "or a list (python -m sandbox mixers --options)",
        group=WHAT,
        flag=True,
    )
    preset: str = setting(
        "tiny",
        "network preset (restoration: paper, small, tiny); tiny keeps the default run short on CPU",
        group=WHAT,
        flag=True,
    )
    arch_options: dict = setting({}, "any other option of the network (embed_dim, depths, ...)", group=WHAT)
    # data
    data_root: str | None = setting(
        None, "data folder (None: $SANDBOX_DATA, else the embedded scikit-image photographs)", group=DATA, flag=True
    )
    train_sets: tuple[str, ...] | None = setting(
        None, "training sets (None: BSD400 gray / CBSD432 color; the embedded split without data)", group=DATA
    )
    eval_sets: tuple[str, ...] | None = setting(
        None,
        "benchmark sets of the final evaluation, comma-separated (Set12,BSD68); 'all' or None: every benchmark "
        "of the task (the embedded eval split without data)",
        group=DATA,
        flag=True,
        parse=set_names,
    )
    val_images: int = setting(
        4, "periodic validation: the first N images of the first eval set, centre-cropped", group=DATA
    )
    val_crop: int = setting(128, "side of the validation crops (0: whole images)", group=DATA)
    patch_size: int = setting(48, "training patch side", group=DATA, flag=True)
    batch_size: int = setting(8, "training patches per iteration", group=DATA, flag=True)
    workers: int = setting(0, "DataLoader worker processes (0: in the main process)", group=DATA)
    # optimisation
    iters: int = setting(1200, "training iterations (the budget, if set, may stop earlier)", group=OPTIM, flag=True)
    budget_minutes: float | None = setting(
        None, "wall-clock budget for training in minutes (evaluation excluded; None: none)", group=OPTIM, flag=True
    )
    optimizer: str = setting("adam", "adam or adamw", group=OPTIM)
    lr: float = setting(2e-4, "peak learning rate", group=OPTIM, flag=True)
    weight_decay: float = setting(0.0, "weight decay of the optimizer", group=OPTIM)
    betas: tuple[float, float] = setting(
        (0.9, 0.999), "Adam/AdamW (beta1, beta2); SwinIR's BasicSR options use (0.9, 0.99)", group=OPTIM
    )
    schedule: str = setting("cosine", "learning-rate schedule: cosine, multistep or constant", group=OPTIM)
    warmup_iters: int = setting(0, "linear learning-rate warm-up iterations", group=OPTIM)
    milestones: tuple[float, ...] = setting((0.5, 0.75, 0.9), "multistep: fractions of iters", group=OPTIM)
    gamma: float = setting(0.5, "multistep decay", group=OPTIM)
    loss: str = setting("charbonnier", "one of LOSSES: l1, l2 (MSE, as DnCNN) or charbonnier", group=OPTIM)
    charbonnier_eps: float = setting(1e-3, "epsilon of the Charbonnier loss", group=OPTIM)
    ema: float = setting(
        0.999, "EMA decay of the weights used for validation and the final evaluation (0: off)", group=OPTIM
    )
    grad_clip: float | None = setting(None, "max gradient norm (None: off)", group=OPTIM)
    amp: str = setting(
        "auto", "auto (bf16 on CUDA and on CPUs with bf16 instructions, else off), bf16 or off", group=OPTIM
    )
    compile: bool = setting(False, "torch.compile the network", group=OPTIM)
    # bookkeeping
    seed: int = setting(
        0, "random seed (commands that train several runs use seed, seed + 1, ...)", group=BOOKKEEPING, flag=True
    )
    device: str | None = setting(
        None,
        "cpu, cuda, cuda:N (None: $SANDBOX_DEVICE, else CUDA when available, else CPU)",
        group=BOOKKEEPING,
        flag=True,
    )
    out: str = setting("runs", "parent folder of run directories", group=BOOKKEEPING, flag=True)
    name: str | None = setting(
        None,
        "run directory name (None: <arch>_<mixer>_<task>_<level>_<time>); never overwritten",
        group=BOOKKEEPING,
        flag=True,
    )
    eval_every: int = setting(100, "validation period in iterations (0: only at the end)", group=BOOKKEEPING)
    save_every: int = setting(100, "checkpoint period in iterations", group=BOOKKEEPING)
    log_every: int = setting(10, "metrics.jsonl period in iterations", group=BOOKKEEPING)
    plugins: tuple[str, ...] = setting(
        (), "modules that register mixers/networks/tasks (the --plugin flag of every command)", group=BOOKKEEPING
    )


# ------------------------------------------------------------------------------------ the declarations on the CLI
CONFIG_FLAGS_ATTR = "config_flags"  # parsed args: the RunConfig fields that had a flag (add_config_flags)


def flag_of(name: str) -> str:
    """The command-line flag of RunConfig field ``name``: ``budget_minutes`` -> ``--budget-minutes``."""
    return "--" + name.replace("_", "-")


def flag_fields(exclude: Sequence[str] = ()) -> list[dataclasses.Field]:
    """The RunConfig fields declared with ``flag=True``, in declaration order, less ``exclude``."""
    return [f for f in dataclasses.fields(RunConfig) if f.metadata.get("flag") and f.name not in exclude]


def _flag_type(f: dataclasses.Field, tp: Any) -> Callable[[str], Any]:
    """How the text of a field's flag becomes its value: the declared ``parse``, else the annotation's scalar type
    (``float | None`` -> float); strings and ``Any`` stay text (apply_overrides checks the type afterwards)."""
    if "parse" in f.metadata:
        return f.metadata["parse"]
    scalars = [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
    return scalars[0] if len(scalars) == 1 and scalars[0] in (int, float) else str


def field_help(name: str) -> str:
    """The declared help of RunConfig field ``name``."""
    return next(f.metadata["help"] for f in dataclasses.fields(RunConfig) if f.name == name)


def add_config_flags(
    parser: argparse.ArgumentParser, exclude: Sequence[str] = (), defaults: Mapping[str, str] | None = None
) -> None:
    """Add a ``--flag`` for every RunConfig field declared with ``flag=True`` (less ``exclude``: the fields the
    command sets itself), in argparse groups named after the sections of RunConfig.

    The help is the field's declaration plus its default, or the command's own default from ``defaults`` (field ->
    what the command does when the flag is not given, e.g. run.py's first benchmark for ``eval_sets``).

    A flag not given leaves no attribute on the parsed args (``argparse.SUPPRESS``), so :func:`flag_overrides` tells
    "not given" from a given value such as ``--eval-sets all`` (None); the parsed args name the fields that have a
    flag in ``CONFIG_FLAGS_ATTR``.
    """
    hints = typing.get_type_hints(RunConfig)
    fields = flag_fields(exclude)
    groups: dict[str, Any] = {}
    parser.set_defaults(**{CONFIG_FLAGS_ATTR: tuple(f.name for f in fields)})
    for f in fields:
        key = f.metadata["group"]
        if key not in groups:
            groups[key] = parser.add_argument_group(key)
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        shown = f" (default: {default})" if default is not None else ""
        groups[key].add_argument(
            flag_of(f.name),
            dest=f.name,
            type=_flag_type(f, hints[f.name]),
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=(f.metadata["help"] + shown).replace("%", "%%"),
        )


def flag_overrides(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The RunConfig overrides of the flags :func:`add_config_flags` added that were given on the command line
    (less ``exclude``)."""
    added = getattr(args, CONFIG_FLAGS_ATTR, ())
    return {k: getattr(args, k) for k in added if k not in exclude and hasattr(args, k)}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping of RunConfig fields (keys are the field names); a syntax error is one line naming the file and
    the line. Keys and types are checked by :func:`apply_overrides`."""
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


def command_overrides(
    args: argparse.Namespace,
    config_file: str | None = None,
    sets: Sequence[str] = (),
    reserved: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A command's RunConfig overrides in precedence order: ``config_file`` (YAML), then the flags of
    :func:`add_config_flags` and ``extra`` (what the command's other flags set, e.g. ``plugins`` from ``--plugin``),
    then ``--set`` items (``arch_options`` merged key by key). ``reserved`` maps the keys the command sets itself to
    the reason given when the file or ``--set`` names one; their flags are not read."""
    reserved = reserved or {}
    overrides = load_config_file(config_file) if config_file else {}
    taken = [k for k in reserved if k in overrides]
    if taken:
        raise OptionError(f"config file {config_file!r} sets {', '.join(map(repr, taken))}; {reserved[taken[0]]}")
    overrides.update(flag_overrides(args, exclude=tuple(reserved)))
    overrides.update(extra or {})
    parsed = parse_set(sets, reserved)
    if isinstance(overrides.get("arch_options"), dict) and "arch_options" in parsed:
        parsed["arch_options"] = {**overrides["arch_options"], **parsed["arch_options"]}
    overrides.update(parsed)
    return overrides
