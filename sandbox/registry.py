"""One generic registry, and the mixer registry built on it.

A :class:`Registry` maps explicit snake_case keys to constructors plus metadata. Mixers are its first instance
(:data:`MIXERS`); networks and tasks use the same class.

    >>> from sandbox import build_mixer, list_mixers
    >>> list_mixers("hyena*")
    ['hyena', 'hyena_bi', 'hyena_pixel']
    >>> mixer = build_mixer({"name": "hco", "k_mode": "fixed", "k": 0.5}, dim=32)

Importing this module imports neither the operators nor basicsr, lpips or optuna: the built-in operators and the
plugins are imported the first time a registry is queried.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .errors import OptionError, SandboxError, UnknownNameError

__all__ = [
    "Registry",
    "Entry",
    "MIXERS",
    "register_mixer",
    "build_mixer",
    "list_mixers",
    "mixer_info",
    "mixer_block_defaults",
    "mixer_pad_multiple",
    "stage_shared_modules",
    "parse_spec",
    "ARCHS",
    "register_arch",
    "build_arch",
    "list_archs",
]

_KEY_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


@dataclass(frozen=True)
class Entry:
    """A registered constructor and its metadata."""

    name: str
    obj: Callable[..., Any]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return getattr(self.obj, "__module__", "?")

    @property
    def summary(self) -> str:
        """First line of the constructor's docstring."""
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def options(self, skip: int = 0) -> dict[str, Any]:
        """Keyword options after ``skip`` positional arguments, with defaults (``inspect.Parameter.empty`` if none)."""
        return _options(self.obj, skip)[0]

    def takes_kwargs(self) -> bool:
        """Whether the constructor takes ``**kwargs`` (then any option name is passed on)."""
        return _options(self.obj)[1]


def _options(obj: Callable[..., Any], skip: int = 0) -> tuple[dict[str, Any], bool]:
    """(keyword options after ``skip`` positional arguments, whether it takes ``**kwargs``)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(obj):
        params = params[1:]  # self
    params = params[skip:]
    opts, var_kw = {}, False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            opts[p.name] = p.default
    return opts, var_kw


class Registry:
    """A named collection of constructors with explicit snake_case keys.

    Args:
        kind: singular noun used in messages ("mixer", "network", "task").
        list_hint: how a user lists the keys, quoted in the unknown-name error.
        required_meta: metadata fields every registration must give.
        populate: called once, on first query, to import the modules that register entries (built-ins, plugins).
    """

    def __init__(
        self,
        kind: str,
        list_hint: str = "",
        required_meta: Sequence[str] = (),
        populate: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.list_hint = list_hint
        self.required_meta = tuple(required_meta)
        self._populate = populate
        self._populated = populate is None
        self._entries: dict[str, Entry] = {}

    # ----------------------------------------------------------------------------------------------- registration
    def register(self, name: str, **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator: ``@MIXERS.register("hco", paper=..., family=...)``. A key registered twice is an error."""
        if not isinstance(name, str) or not _KEY_RE.match(name):
            raise SandboxError(f"{self.kind} key {name!r} is not snake_case (lowercase letters, digits, underscores)")
        missing = [m for m in self.required_meta if m not in meta]
        if missing:
            raise SandboxError(f"{self.kind} {name!r} is registered without metadata {', '.join(missing)}")

        def decorator(obj: Callable) -> Callable:
            if name in self._entries:
                old = self._entries[name].module
                raise SandboxError(
                    f"{self.kind} {name!r} is already registered (by {old}); pick another key for {obj.__module__}"
                )
            self._entries[name] = Entry(name, obj, dict(meta))
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a key (tests and interactive sessions that re-register a plugin)."""
        self._entries.pop(name, None)

    # ---------------------------------------------------------------------------------------------------- queries
    def _ensure(self) -> None:
        if not self._populated:
            self._populated = True  # set first: populate() may query the registry
            try:
                self._populate()
            except BaseException:
                self._populated = False
                raise

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._ensure()
        return len(self._entries)

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` for ``name``; an unknown name raises :class:`UnknownNameError` with close matches."""
        self._ensure()
        if name in self._entries:
            return self._entries[name]
        raise UnknownNameError(self._unknown_message(name))

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).obj

    def _unknown_message(self, name: Any) -> str:
        keys = sorted(self._entries)
        close = difflib.get_close_matches(str(name), keys, n=3, cutoff=0.6)
        prefix = [k for k in keys if str(name) and (k.startswith(str(name)) or str(name).startswith(k))]
        close += [k for k in prefix if k not in close][: max(0, 3 - len(close))]
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        stem = re.split(r"[_\W]", str(name))[0][:5] if name else ""
        listing = self.list_hint.format(pattern=f"*{stem}*" if stem else "*")
        return f"unknown {self.kind} {name!r}; {hint}{listing}".rstrip("; ")

    def list(self, pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()) -> list[str]:
        """Sorted keys matching any fnmatch ``pattern`` and none of ``exclude`` (``'hyena*'``, ``['conv', 'pool']``)."""
        self._ensure()
        include = [pattern] if isinstance(pattern, str) else list(pattern)
        excl = [exclude] if isinstance(exclude, str) else list(exclude)
        include = include or ["*"]
        return sorted(
            k
            for k in self._entries
            if any(fnmatch.fnmatchcase(k, p) for p in include) and not any(fnmatch.fnmatchcase(k, p) for p in excl)
        )

    # ------------------------------------------------------------------------------------------------------ build
    def build(self, spec: str | Mapping[str, Any], *args: Any, **overrides: Any) -> Any:
        """Build from a spec: a key (``"hco"``), ``"hco:k_mode=fixed,k=0.5"`` or a mapping ``{"name": ..., **opts}``.

        Positional ``args`` go to the constructor first (a mixer's ``dim``); ``overrides`` are merged over the
        spec's options. An unknown option raises :class:`OptionError` naming the options the constructor accepts.
        """
        name, options = parse_spec(spec, self.kind)
        options.update(overrides)
        entry = self.entry(name)
        accepted, var_kw = _options(entry.obj, skip=len(args))
        unknown = [k for k in options if k not in accepted]
        if unknown and not var_kw:
            bad = unknown[0]
            close = difflib.get_close_matches(bad, list(accepted), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listed = ", ".join(accepted) if accepted else "none"
            raise OptionError(f"{self.kind} {name!r} has no option {bad!r}; {hint}it accepts: {listed}")
        return entry.obj(*args, **options)


def _literal(text: str) -> Any:
    """Parse a command-line value: Python literals (numbers, booleans, None, lists), else the bare string."""
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_spec(spec: str | Mapping[str, Any], kind: str = "component") -> tuple[str, dict[str, Any]]:
    """Split a spec into ``(name, options)``.

    Accepts ``"name"``, ``"name:key=value,key=value"`` (values parsed as Python literals, else strings) and mappings
    with a ``name`` key. The mapping is not modified.
    """
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise OptionError(f"{kind} spec {dict(spec)!r} has no 'name' key; expected {{'name': ..., **options}}")
        options = {k: v for k, v in spec.items() if k != "name"}
        return str(spec["name"]), options
    if not isinstance(spec, str):
        raise OptionError(f"{kind} spec {spec!r} is neither a name, 'name:key=value,...', nor a mapping with 'name'")
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    # split on commas that start a new key=value pair, so list values like sizes=[3,5] survive
    for item in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)", rest) if rest.strip() else []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise OptionError(f"{kind} spec {spec!r}: {item!r} is not key=value")
        options[key.strip()] = _literal(value.strip())
    return name.strip(), options


# ---------------------------------------------------------------------------------------------------------- mixers
def _populate_mixers() -> None:
    import operators  # noqa: F401  (registers the built-in mixers)

    from .plugins import load_plugins

    load_plugins()  # SANDBOX_PLUGINS and installed entry points


MIXERS = Registry(
    "mixer",
    list_hint="list them with `python -m sandbox mixers` or list_mixers('{pattern}')",
    required_meta=("paper", "family", "complexity", "sizes"),
    populate=_populate_mixers,
)


def register_mixer(
    name: str,
    *,
    paper: str,
    family: str,
    complexity: str,
    sizes: str = "any H, W >= 1",
    size_multiple: int = 1,
    **meta: Any,
) -> Callable[[Callable], Callable]:
    """Register a token mixer class under ``name``.

    The class must follow the mixer contract (see ``operators/__init__.py``): ``cls(dim, **options)`` is an
    ``nn.Module`` whose ``forward`` maps (B, C, H, W) to (B, C, H, W).

    Optional hooks, declared on the class and read by the networks through :func:`mixer_block_defaults`,
    :func:`mixer_pad_multiple` and :func:`stage_shared_modules` (never by the mixer's name), so a plugin mixer gets
    the same treatment as the built-ins:

    - ``block_defaults(index, network_config, options) -> dict`` (static or class method): options the network fills
      in for the mixer of block ``index`` (0-based within its stage or residual group) where the block's spec
      ``options`` leaves them unset, from the network's config dataclass. ``attention_window`` takes its window and
      heads from the network and alternates its shift 0, ``window_size // 2`` (SwinIR).
    - ``pad_multiple`` (attribute or property of the built mixer): the network reflect-pads its input to a multiple
      of it, so the mixer sees image content rather than its own padding (``attention_window``: its window).
      ``size_multiple`` below is the hard constraint; the network pads to the least common multiple of both.
    - ``share_across_stage(modules, size) -> dict[str, nn.Module]`` (class or static method): parameters shared by
      the blocks of one stage (residual group). The network calls it once per stage with every instance of the
      class among that stage's mixers (and their submodules), in block order, and registers each returned module on
      the stage under its key, so it is trained, moved and saved once (state_dict key ``<stage>.<key>.*``); the hook
      binds it to the instances. ``size`` is the side the network gives the stage's shared parameters. ``hco``
      shares its frequency value embedding (``freq_embed``) among its ``k_mode="predicted_shared"`` layers.

    Args:
        name: snake_case registry key.
        paper: short citation of the paper the operator comes from.
        family: operator family ("heat", "liquid", "hyena", "attention", "conv", "spectral", "pool", "identity", ...).
        complexity: time complexity in the token count N = H*W, e.g. "O(N^1.5)".
        sizes: which input sizes it accepts, in words.
        size_multiple: H and W must be multiples of this (1 = any size).
    """
    return MIXERS.register(
        name, paper=paper, family=family, complexity=complexity, sizes=sizes, size_multiple=size_multiple, **meta
    )


def build_mixer(spec: str | Mapping[str, Any], dim: int, **overrides: Any):
    """Build a mixer from a name, ``"name:key=value,..."`` or ``{"name": ..., **options}`` for ``dim`` channels."""
    return MIXERS.build(spec, dim, **overrides)


def list_mixers(pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()) -> list[str]:
    """Registered mixer keys matching fnmatch ``pattern`` (e.g. ``'hyena*'``) minus ``exclude``, sorted."""
    return MIXERS.list(pattern, exclude)


def mixer_info(name: str) -> Entry:
    """The registry entry (constructor, metadata, options) of mixer ``name``."""
    return MIXERS.entry(name)


# ---------------------------------------------------------------------------------------------------- mixer hooks
def mixer_block_defaults(name: str, index: int, network_config: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Options the network fills in for block ``index``'s mixer ``name`` where the spec's ``options`` leave them
    unset: the mixer's ``block_defaults`` hook (see :func:`register_mixer`), or none."""
    hook = getattr(MIXERS.get(name), "block_defaults", None)
    if hook is None:
        return {}
    return {k: v for k, v in dict(hook(index, network_config, options)).items() if k not in options}


def mixer_pad_multiple(name: str, mixer: Any) -> int:
    """The multiple a network pads its input to for a built ``mixer`` registered as ``name``: the least common
    multiple of the registered ``size_multiple`` (a hard constraint) and the mixer's ``pad_multiple`` (a preference)."""
    return math.lcm(int(MIXERS.entry(name).meta.get("size_multiple", 1)), int(getattr(mixer, "pad_multiple", 1)))


def stage_shared_modules(blocks: Sequence[Any], size: int) -> dict[str, Any]:
    """The modules the mixers of one stage share, ``{key: module}`` for the network to register on the stage.

    Every class among the modules of ``blocks`` (the stage's blocks or mixers, with their submodules) that declares
    ``share_across_stage`` is called once with its instances in block order, classes in order of first appearance
    (see :func:`register_mixer`). Two classes returning the same key is an error.
    """
    by_class: dict[type, list[Any]] = {}
    for block in blocks:
        for module in block.modules():  # nn.Module.modules: the block itself, then its submodules depth first
            if callable(getattr(type(module), "share_across_stage", None)):
                by_class.setdefault(type(module), []).append(module)
    shared: dict[str, Any] = {}
    for cls, modules in by_class.items():
        for key, module in dict(cls.share_across_stage(modules, size)).items():
            if key in shared:
                raise SandboxError(
                    f"stage-shared key {key!r} of {cls.__name__} is already used by another mixer in the stage"
                )
            shared[key] = module
    return shared


# -------------------------------------------------------------------------------------------------------- networks
ARCH_FAMILIES = ("restoration", "classification", "reference")


def _populate_archs() -> None:
    import archs  # noqa: F401  (registers the built-in networks)

    MIXERS._ensure()  # plugins may register networks as well as mixers


ARCHS = Registry(
    "network",
    list_hint="list them with `python -m sandbox archs` or list_archs('{pattern}')",
    required_meta=("family", "paper"),
    populate=_populate_archs,
)


def register_arch(name: str, *, family: str, paper: str, **meta: Any) -> Callable[[Callable], Callable]:
    """Register a network entrypoint (a function or class taking keyword options) under ``name``.

    Args:
        name: snake_case registry key.
        family: ``"restoration"`` (image in, image out), ``"classification"`` (image in, logits out) or
            ``"reference"`` (fixed published networks that load official weights).
        paper: short citation.
        meta: anything else shown by ``python -m sandbox archs`` (e.g. ``input="3x224x224"``). Two keys fill its
            count columns without building the network: ``params`` (parameter count at the default options) and
            ``macs`` (multiply-adds at the default options and the listing's default input, 224 px for
            classification, 128 px otherwise); ``python -m sandbox archs NAME`` counts them on the built network.
    """
    if family not in ARCH_FAMILIES:
        raise SandboxError(f"network family {family!r} is not one of {', '.join(map(repr, ARCH_FAMILIES))}")
    return ARCHS.register(name, family=family, paper=paper, **meta)


def build_arch(spec: str | Mapping[str, Any], **overrides: Any):
    """Build a network from ``"name"``, ``"name:key=value,..."`` or ``{"name": ..., **options}``.

    The returned module carries ``arch_spec`` (``{"name": ..., **options}``), enough to rebuild it: checkpoints store
    it so that evaluation never needs the original config.
    """
    name, options = parse_spec(spec, "network")
    options.update(overrides)
    model = ARCHS.build({"name": name, **options})
    try:
        model.arch_spec = {"name": name, **options}
    except AttributeError:  # an entrypoint returning something that takes no attributes
        pass
    return model


def list_archs(
    pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = (), family: str | None = None
) -> list[str]:
    """Registered network keys matching fnmatch ``pattern`` minus ``exclude``, optionally of one ``family``, sorted."""
    names = ARCHS.list(pattern, exclude)
    return [n for n in names if family is None or ARCHS.entry(n).meta["family"] == family]


# ----------------------------------------------------------------------------------------------------------- tasks
def _populate_tasks() -> None:
    from . import tasks  # noqa: F401  (registers the built-in tasks)

    MIXERS._ensure()  # plugins may register tasks as well as mixers


TASKS = Registry(
    "task",
    list_hint="list them with `python -m sandbox tasks` or list_tasks('{pattern}')",
    required_meta=("description",),
    populate=_populate_tasks,
)


def register_task(name: str, *, description: str, **meta: Any) -> Callable[[Callable], Callable]:
    """Register a task factory (a function or class taking keyword options, returning a ``sandbox.tasks.Task``).

    Args:
        name: snake_case registry key.
        description: one line shown by ``python -m sandbox tasks`` (e.g. "gray AWGN denoising").
        meta: anything else to show in the listing.
    """
    return TASKS.register(name, description=description, **meta)


def build_task(spec: Any, **overrides: Any):
    """Build a task from ``"name"``, ``"name:key=value,..."`` (``"denoise:sigma=50"``) or ``{"name": ..., **opts}``.

    A ``Task`` instance is returned as is, or rebuilt from its ``spec`` with ``overrides`` when any are given. Bad
    option values raise :class:`OptionError` (``sigma=-5 is not valid; ...``).
    """
    task_spec = getattr(spec, "spec", None)
    if isinstance(task_spec, Mapping) and not isinstance(spec, (str, Mapping)):
        if not overrides:
            return spec
        spec = task_spec
    name, options = parse_spec(spec, "task")
    options.update(overrides)
    return TASKS.build({"name": name, **options})


def list_tasks(pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()) -> list[str]:
    """Registered task keys matching fnmatch ``pattern`` (e.g. ``'jpeg*'``) minus ``exclude``, sorted."""
    return TASKS.list(pattern, exclude)


__all__ += ["TASKS", "register_task", "build_task", "list_tasks"]
