"""Optuna ablation sweeps: study files, search spaces, the objective around :func:`sandbox.engine.train`, storages,
workers that survive crashes, and the ablation reports.

A study file (``experiments/sweeps/<name>.yaml``) holds RunConfig overrides shared by every trial (``base``) and the
parameters that vary (``params``)::

    description: vHeat Table 6 on restoration
    base: {mixer: hco}                      # RunConfig overrides; strings may hold {param} placeholders
    params:
      k:                                    # a categorical over named settings, each a dict of RunConfig overrides
        settings:
          "fixed k=0": {mixer: "hco:k_mode=fixed,k=0"}
          learnable: {mixer: "hco:k_mode=learnable"}
      lr: {low: 2.0e-4, high: 2.0e-3, log: true, key: lr}              # a float range into RunConfig.lr
      width: {choices: [16, 32, 48], key: arch_options.embed_dim}      # a categorical into arch_options
      mixer: {choices: mixers, key: mixer}                             # every registered mixer, plugins included

A trial trains ``seeds`` runs of one setting (seed, seed + 1, ...; 3 by default) and its value is their mean PSNR on
the first evaluation set; the first run's validation PSNR is reported to the pruner. Every run directory is stored in
the trial's ``run_dirs`` attribute as soon as it exists (its seeds in ``seeds``), so a trial whose worker died (no
heartbeat for the grace period) is failed, retried by :class:`optuna.storages.RetryFailedTrialCallback`, and the retry
resumes those runs from their last checkpoints. Finite spaces with the grid sampler are enqueued once, setting by
setting, so parallel workers never run a setting twice.

Pruning (``SweepOptions.pruner``): ``patient`` (the default, :class:`PatientMedianPruner`) decides nothing before
``prune_warmup`` of a run's iterations (0.5), needs 2 completed trials with a value at the same validation step, and
prunes a trial only when it is more than ``prune_margin`` dB (0.1) below their median; the margin should be at least
the difference the validation resolves (its PSNR is on ``val_images`` centre crops, 4 by default). ``median`` is
Optuna's MedianPruner (it stops a setting at its first validation over any difference, 0.001 dB included),
``hyperband`` Optuna's HyperbandPruner, ``none`` never prunes.

The reports (:func:`write_reports`): seed k gives every setting the same patches, noise draws and initialisation, so
the complete trials' runs are compared paired on seeds and images from their ``per_image.csv``
(:func:`sandbox.stats.runs_table`, :func:`sandbox.stats.compare`, on the first evaluation set). ``ablation.md`` has one
row per setting (file order for finite studies, best first otherwise):

- ``PSNR mean ± 95% CI``: the mean over seeds and images ± half the 95% t-interval across the seeds' means (``no
  interval: 1 seed`` with one seed);
- ``Δ vs <baseline> [95% CI]``: the setting minus the baseline (``--baseline``, default the first setting), paired on
  seeds and images, with its hierarchical-bootstrap interval; ``*``: resolved;
- ``p (Holm)``: the paired test's p-value, Holm-corrected over the rows;
- ``rank``: rank groups in descending mean; settings that share a rank are not resolved from each other (bold: the
  leading group, when a setting is resolved from it);
- SSIM (mean), params of the network, iterations and training minutes per run, trials pruned or failed; a setting
  without a complete trial shows ``pruned`` or ``failed: <error>`` instead of its scores.

Under the table, :meth:`sandbox.stats.Comparison.footer`: what the intervals mean, the seed-to-seed and image-to-image
spread, the smallest difference the design resolves and the seeds needed to resolve 0.05 and 0.1 dB. ``ablation.csv``
holds the same per setting (:meth:`sandbox.stats.Comparison.records`), ``forest.png`` each difference with its
interval. Runs without ``per_image.csv`` (studies older than it) give the former table, mean ± sample std over the
seeds, with a note that per-image results are missing.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import re
import socket
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig, apply_overrides
from .errors import OptionError, SandboxError
from .utils import atomic_path

try:  # the sweep extra (optuna) may be absent: everything else in this module imports it where it is used
    from optuna.pruners import BasePruner as _BasePruner
except ImportError:  # pragma: no cover
    _BasePruner = object

__all__ = [
    "Param",
    "PatientMedianPruner",
    "StudySpec",
    "SweepOptions",
    "load_study_spec",
    "open_storage",
    "prepare_study",
    "run_worker",
    "write_reports",
    "study_counts",
]

STATES_DONE = ("COMPLETE", "PRUNED")
HEARTBEAT_S = 60  # default heartbeat of a running trial; it is failed and retried after 2 heartbeats of silence


class SweepError(SandboxError):
    """A one-line error of the sweep machinery (study file, storage, options)."""


# ------------------------------------------------------------------------------------------------------ study files
@dataclass
class Param:
    """One varying parameter of a study."""

    name: str
    kind: str  # "settings" (labels -> override dicts), "categorical", "int" or "float"
    choices: list[Any] = field(default_factory=list)  # settings labels / categorical values
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # settings: label -> RunConfig overrides
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    key: str | None = None  # RunConfig field (or arch_options.X) the value is written to; None: placeholders only

    @property
    def finite(self) -> bool:
        return self.kind in ("settings", "categorical") or (self.kind == "int" and not self.log)

    def values(self) -> list[Any]:
        """The grid values of a finite parameter."""
        if self.kind in ("settings", "categorical"):
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise SweepError(f"parameter {self.name!r} is a {'log ' if self.log else ''}{self.kind} range, not a grid")

    def suggest(self, trial: Any) -> Any:
        if self.kind in ("settings", "categorical"):
            return trial.suggest_categorical(self.name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass
class StudySpec:
    """A study file, parsed and checked."""

    name: str
    path: Path
    description: str
    base: dict[str, Any]
    params: list[Param]
    text: str  # the file as read (its hash ties a stored study to its definition)

    @property
    def finite(self) -> bool:
        return all(p.finite for p in self.params)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' values, in file order (the first parameter varies slowest)."""
        names = [p.name for p in self.params]
        return [dict(zip(names, combo)) for combo in itertools.product(*(p.values() for p in self.params))]

    def label(self, values: dict[str, Any]) -> str:
        """The human name of a setting: a single settings label as it is, otherwise ``name=value`` pairs."""
        if len(self.params) == 1 and self.params[0].kind == "settings":
            return str(values[self.params[0].name])
        return ", ".join(f"{p.name}={_fmt_value(values[p.name])}" for p in self.params)

    def overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """RunConfig overrides of a setting: ``base`` with placeholders filled, then each parameter's."""
        fill = {p.name: values[p.name] for p in self.params}
        out = _fill(self.base, fill, self)
        for p in self.params:
            if p.kind == "settings":
                _merge(out, _fill(p.settings[values[p.name]], fill, self))
            elif p.key:
                _merge(out, _dotted(p.key, values[p.name]))
        return out


def _fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _dotted(key: str, value: Any) -> dict[str, Any]:
    head, dot, rest = key.partition(".")
    return {head: _dotted(rest, value)} if dot else {head: value}


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _fill(obj: Any, values: dict[str, Any], spec: StudySpec) -> Any:
    """Replace ``{param}`` placeholders in the strings of ``obj`` (a whole-string placeholder keeps the value's
    type: ``"{width}"`` -> 32)."""
    if isinstance(obj, dict):
        return {k: _fill(v, values, spec) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, values, spec) for v in obj]
    if not isinstance(obj, str):
        return obj
    whole = re.fullmatch(r"\{(\w+)\}", obj)
    if whole and whole.group(1) in values:
        return values[whole.group(1)]

    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise SweepError(
                f"{spec.path}: placeholder {{{m.group(1)}}} names no parameter; parameters: "
                + ", ".join(p.name for p in spec.params)
            )
        return str(values[m.group(1)])

    return re.sub(r"\{(\w+)\}", sub, obj)


PARAM_KEYS = {"settings", "choices", "low", "high", "step", "log", "key", "type"}


def _yaml_line(text: str, *path: str) -> int | None:
    """1-based line of the mapping key at ``path`` in ``text`` (for error messages), or None."""
    import yaml

    node = yaml.compose(text)
    line = None
    for name in path:
        if not isinstance(node, yaml.MappingNode):
            return line
        for k, v in node.value:
            if k.value == name:
                line, node = k.start_mark.line + 1, v
                break
        else:
            return line
    return line


def study_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def load_study_spec(name_or_path: str, folder: Path, mixer_names: list[str] | None = None) -> StudySpec:
    """Read a study by name (``folder/<name>.yaml``) or path; errors name the file and line.

    Args:
        mixer_names: the registered mixers, for ``choices: mixers`` (plugins must be loaded before).
    """
    import yaml

    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        files = study_files(folder)
        if name_or_path not in files:
            raise SweepError(
                f"unknown study {name_or_path!r}; available: {', '.join(files) or 'none'} "
                f"(files in {folder}), or a path to a .yaml study file"
            )
        path = files[name_or_path]
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"{path}{where}: YAML syntax error: {problem}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a study file is a mapping with 'params' (and 'base', 'description')")
    unknown = set(raw) - {"name", "description", "base", "params"}
    if unknown:
        key = sorted(unknown)[0]
        raise SweepError(
            f"{path} line {_yaml_line(text, key)}: unknown key {key!r}; expected name, description, base, params"
        )
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise SweepError(f"{path} line {_yaml_line(text, 'base')}: 'base' must be a mapping of RunConfig overrides")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SweepError(f"{path} line {_yaml_line(text, 'params') or 1}: 'params' must be a non-empty mapping")
    params = [_parse_param(n, d, path, text, mixer_names) for n, d in params_raw.items()]
    spec = StudySpec(str(raw.get("name") or path.stem), path, str(raw.get("description") or ""), base, params, text)
    # every setting must give a valid RunConfig (types and keys), before anything runs
    first = {p.name: p.values()[0] if p.finite else p.low for p in params}
    grid = spec.grid() if spec.finite else []
    for values in grid if 0 < len(grid) <= 512 else [first]:
        check_overrides(spec.overrides(values), f"{path} ({spec.label(values)})")
    return spec


def _parse_param(name: str, d: Any, path: Path, text: str, mixer_names: list[str] | None) -> Param:
    """One entry of ``params``: a mapping with ``settings``, ``choices`` (a bare list is choices) or ``low``/``high``;
    ``key`` is the RunConfig field the value goes to (default for a range: the parameter's name when that is a
    field, as ``lr: {low: 1.0e-4, high: 1.0e-3, log: true}``)."""
    line = _yaml_line(text, "params", name)

    def bad(msg: str) -> SweepError:
        return SweepError(f"{path} line {line}: parameter {name!r}: {msg}")

    if isinstance(d, list):
        d = {"choices": d}
    if not isinstance(d, dict):
        raise bad("expected a mapping with settings, choices, or low/high")
    unknown = set(d) - PARAM_KEYS
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}; expected {', '.join(sorted(PARAM_KEYS))}")
    if "settings" in d:
        return _settings_param(name, d["settings"], bad)
    if "choices" in d:
        return _choices_param(name, d["choices"], d.get("key"), mixer_names, bad)
    if "low" in d and "high" in d:
        return _range_param(name, d, bad)
    raise bad("expected 'settings', 'choices', or 'low' and 'high'")


def _settings_param(name: str, settings: Any, bad: Callable[[str], SweepError]) -> Param:
    """A categorical over named settings, each a mapping of RunConfig overrides."""
    if not isinstance(settings, dict) or not settings or not all(isinstance(v, dict) for v in settings.values()):
        raise bad("'settings' must map each label to a mapping of RunConfig overrides")
    labels = {str(k): v for k, v in settings.items()}
    return Param(name, "settings", choices=list(labels), settings=labels)


def _choices_param(
    name: str, choices: Any, key: str | None, mixer_names: list[str] | None, bad: Callable[[str], SweepError]
) -> Param:
    """A categorical over values Optuna can store (``mixers``: every registered mixer)."""
    if choices == "mixers":
        if mixer_names is None:
            raise bad("'choices: mixers' needs the mixer registry")
        choices = list(mixer_names)
    if not isinstance(choices, list) or not choices:
        raise bad("'choices' must be a non-empty list (or 'mixers' for every registered mixer)")
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in choices):
        raise bad("choices must be strings, numbers, booleans or null (Optuna stores them)")
    return Param(name, "categorical", choices=choices, key=key)


def _range_param(name: str, d: dict[str, Any], bad: Callable[[str], SweepError]) -> Param:
    """An int or float range (``log`` for a log scale, ``step`` for a grid step) into RunConfig field ``key``."""
    low, high = d["low"], d["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        raise bad(f"low={low!r}, high={high!r} must be numbers with low <= high")
    kind = d.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise bad(f"type={kind!r} is not valid; expected int or float")
    if d.get("log") and low <= 0:
        raise bad("a log range needs low > 0")
    key = d.get("key") or (name if name in {f.name for f in dataclasses.fields(RunConfig)} else None)
    if key is None:
        raise bad(
            "a range needs 'key' (the RunConfig field it sets, e.g. lr or arch_options.embed_dim), "
            "or a RunConfig field as its name"
        )
    return Param(name, kind, low=low, high=high, step=d.get("step"), log=bool(d.get("log")), key=key)


def check_overrides(overrides: dict[str, Any], where: str) -> RunConfig:
    """RunConfig with ``overrides`` applied (arch_options merged); one-line errors name ``where``."""
    try:
        return apply_overrides(RunConfig(), overrides, "run config")
    except OptionError as e:
        raise SweepError(f"{where}: {e}") from None


# -------------------------------------------------------------------------------------------------------- storage
def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def storage_url(storage: str | None, out: Path) -> str:
    """The storage URL a ``--storage`` value means (None: SQLite in ``out``; ``journal:FILE`` or ``*.log``: an Optuna
    journal file)."""
    if storage is None:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    if storage.startswith("journal:"):
        return "journal:" + str(Path(storage[len("journal:") :]).expanduser().resolve())
    if storage.endswith((".log", ".journal")) and "://" not in storage:
        return "journal:" + str(Path(storage).expanduser().resolve())
    if re.match(r"^(sqlite|postgresql|postgres|mysql)(\+\w+)?://", storage):
        return storage
    raise SweepError(
        f"storage {storage!r} is not valid; expected sqlite:///FILE, postgresql://USER@HOST/DB, mysql://..., "
        "or journal:FILE (an Optuna journal file on a shared file system)"
    )


def _postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy's default differs between 2.0 and 2.1)."""
    m = re.match(r"^postgres(ql)?://", url)
    if not m:
        return url
    import importlib.util

    for module, dialect in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://" + url[m.end() :]
    raise SweepError("no PostgreSQL driver is installed; pip install 'psycopg[binary]' (or use sqlite:///FILE)")


def open_storage(url: str, heartbeat: int | None = HEARTBEAT_S, max_retry: int = 2):
    """An Optuna storage for ``url`` (see :func:`storage_url`); RDB storages get heartbeats and the retry callback.

    A server that cannot be reached is one line: ``cannot open storage postgresql://u:***@host/db: <reason>``.
    """
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except Exception as e:
            raise SweepError(f"cannot open storage {url}: {_first_line(e)}") from None
    engine_kwargs: dict[str, Any] = {}
    real = _postgres_driver(url)
    if real.startswith("sqlite"):
        Path(real.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 120}  # several worker processes write to one SQLite file
    elif real.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True
    elif real.startswith("mysql"):
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
        retry = retry or optuna.storages.RetryFailedTrialCallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = retry(max_retry=max_retry)
        kwargs = dict(heartbeat_interval=int(heartbeat), grace_period=int(2 * heartbeat))
        kwargs["heartbeat_stale_trial_callback"] = callback
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(real, engine_kwargs=engine_kwargs, **kwargs)
    except SandboxError:
        raise
    except Exception as e:
        raise SweepError(f"cannot open storage {_redact(url)}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------------------------------------- options
@dataclass
class SweepOptions:
    """What one sweep command asks for (``experiments/sweep.py``)."""

    study: str  # study name or YAML path
    trials: int = 8  # finished trials the study should hold (complete, pruned or failed by an error)
    out: Path = Path("outputs/sweeps/study")
    storage: str | None = None  # see storage_url
    study_name: str | None = None  # name in the storage (default: the study's name)
    seeds: int = 3  # runs per trial (seed, seed + 1, ...): 3 give every setting a t-interval across seeds
    seed: int = 0
    sampler: str | None = None  # tpe, grid, random (None: grid for finite spaces, else tpe)
    pruner: str = "patient"  # patient (PatientMedianPruner), median (Optuna's MedianPruner), hyperband, none
    prune_warmup: float = 0.5  # patient: no decision before this share of a run's iterations
    prune_margin: float = 0.1  # patient: dB below the others' median before a trial is pruned
    baseline: str | None = None  # the setting ablation.md's differences are taken to (None: the first)
    heartbeat: int = HEARTBEAT_S  # seconds; a trial silent for 2 heartbeats is failed and retried
    max_retry: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)  # RunConfig overrides from the command line
    progress: bool = True
    worker: str = ""  # worker tag in messages


def settings_digest(spec: StudySpec, opts: SweepOptions) -> dict[str, Any]:
    """What must not change between the commands that share a stored study."""
    return {
        "study_file_sha256": hashlib.sha256(spec.text.encode()).hexdigest()[:16],
        "seeds": opts.seeds,
        "seed": opts.seed,
        "overrides": json.loads(json.dumps(opts.overrides, default=str)),
    }


def _sampler(name: str | None, spec: StudySpec, seed: int):
    import optuna

    name = name or ("grid" if spec.finite else "tpe")
    if name == "grid":
        if not spec.finite:
            bad = next(p for p in spec.params if not p.finite)
            raise SweepError(f"--sampler grid needs a finite space; parameter {bad.name!r} is a {bad.kind} range")
        return name, optuna.samplers.TPESampler(seed=seed)  # grid points are enqueued; TPE never samples them
    if name == "tpe":
        return name, optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return name, optuna.samplers.RandomSampler(seed=seed)
    raise SweepError(f"--sampler {name!r} is not valid; expected tpe, grid or random")


PRUNERS = ("patient", "median", "hyperband", "none")


class PatientMedianPruner(_BasePruner):
    """A median rule that does not decide on noise: the default pruner of the sweeps (``--pruner patient``).

    A trial is pruned at a validation step only when all of these hold:

    - the step is past the warm-up: at least ``warmup`` (a share, 0..1) of the run's iterations. The run's length is
      the trial's ``run_steps`` user attribute (the objective sets it to the run's ``iters``, and, under a
      wall-clock budget, to the iterations the budget is projected to reach), else ``run_steps`` given here; a trial
      whose length is unknown is never pruned;
    - at least ``min_trials`` completed trials reported a value at this very step;
    - the trial's value at this step is worse than the median of theirs by more than ``margin`` (below it when the
      study maximises). A NaN value (a diverged run) past the warm-up is pruned.

    Optuna's :class:`optuna.pruners.MedianPruner` (``--pruner median``) prunes on any difference, so with a few
    validation crops it stops settings at their first validation over a difference of a thousandth of a dB; the
    margin should be at least the difference the validation can resolve (the sweeps validate on ``val_images``
    centre crops, 4 by default). Unrelated to :class:`optuna.pruners.PatientPruner`, which waits for a trial to stop
    improving. Uses public Optuna API only (``study.get_trials``, ``trial.intermediate_values``, ``trial.last_step``).
    """

    def __init__(self, warmup: float = 0.5, margin: float = 0.1, min_trials: int = 2, run_steps: int | None = None):
        if not 0.0 <= warmup <= 1.0:
            raise SweepError(f"--prune-warmup {warmup:g} is not valid; expected a share of the run's iterations, 0..1")
        if not margin >= 0.0:
            raise SweepError(f"--prune-margin {margin:g} is not valid; expected dB >= 0")
        if min_trials < 1:
            raise SweepError(f"min_trials {min_trials} is not valid; expected an integer >= 1")
        self.warmup = float(warmup)
        self.margin = float(margin)
        self.min_trials = int(min_trials)
        self.run_steps = run_steps

    def prune(self, study, trial) -> bool:
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        step = trial.last_step
        if step is None:
            return False
        total = trial.user_attrs.get("run_steps") or self.run_steps
        if not total or step < self.warmup * float(total):
            return False
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.number != trial.number and step in t.intermediate_values
        ]
        others = [v for v in others if not math.isnan(v)]
        if len(others) < self.min_trials:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        median = statistics.median(others)
        if study.direction == StudyDirection.MINIMIZE:
            return value > median + self.margin
        return value < median - self.margin


def _pruner(name: str, warmup: float = 0.5, margin: float = 0.1):
    import optuna

    if name == "patient":
        return PatientMedianPruner(warmup=warmup, margin=margin)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SweepError(f"--pruner {name!r} is not valid; expected {', '.join(PRUNERS)}")


# ------------------------------------------------------------------------------------------------------- the study
def prepare_study(spec: StudySpec, opts: SweepOptions, report: bool = False):
    """Create or load the study (checking it was made by the same definition and options) and enqueue the grid.

    With ``report`` (only the tables and plots are wanted) the seed count is not checked (the report reads what each
    trial stored, whatever ``--seeds`` says) and nothing is enqueued. Returns ``(study, storage_url)``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(opts.storage, opts.out)
    storage = open_storage(url, opts.heartbeat, opts.max_retry)
    sampler_name, sampler = _sampler(opts.sampler, spec, opts.seed)
    name = opts.study_name or spec.name
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=_pruner(opts.pruner, opts.prune_warmup, opts.prune_margin),
        load_if_exists=True,
    )
    digest = settings_digest(spec, opts)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", digest)
        study.set_user_attr("study_file", str(spec.path))
        study.set_user_attr("description", spec.description)
    else:
        changed = [k for k in digest if stored.get(k) != digest[k] and not (report and k == "seeds")]
        if changed:
            raise SweepError(
                f"study {name!r} in {_redact(url)} was made with other settings ({', '.join(changed)} differ); "
                "use the same study file and options to resume it, or a new --study-name / --out"
            )
    if sampler_name == "grid" and not report:
        enqueue_grid(study, spec, opts.trials)
    return study, url


def enqueue_grid(study, spec: StudySpec, trials: int) -> int:
    """Enqueue the first ``trials`` grid points that the study does not hold yet; returns how many were added."""
    import optuna

    have = {
        json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True, default=str)
        for t in study.get_trials(deepcopy=False)
    }
    added = 0
    for values in spec.grid()[:trials]:
        if json.dumps(values, sort_keys=True, default=str) in have:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(values, user_attrs={"setting": spec.label(values)})
        added += 1
    return added


def study_counts(study) -> dict[str, int]:
    """Trials by state; ``done`` = complete + pruned + failed by an error (a failed worker's trial is retried)."""
    counts = {"COMPLETE": 0, "PRUNED": 0, "RUNNING": 0, "WAITING": 0, "FAIL": 0, "error": 0, "surplus": 0}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
        if t.state.name == "FAIL" and "error" in t.user_attrs:
            counts["surplus" if t.user_attrs.get("surplus") else "error"] += 1
    counts["done"] = counts["COMPLETE"] + counts["PRUNED"] + counts["error"]
    return counts


class _Surplus(Exception):
    """Another worker took the last trial slot between our count and our ask."""


def _first_eval_psnr(result: Any) -> tuple[str, float]:
    first = next(iter(result.final))
    return first, float(result.final[first]["psnr"])


def frozen_trial(study, number: int):
    """The stored :class:`optuna.trial.FrozenTrial` of trial ``number`` (its system attributes: ``fixed_params`` of an
    enqueued trial, ``failed_trial`` of a retry; and the attributes callbacks set), by public API."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _retry_of(frozen) -> int | None:
    """The number of the failed trial that ``frozen`` retries (RetryFailedTrialCallback), or None."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryFailedTrialCallback.retried_trial_number(frozen)


def _check_not_surplus(trial, frozen, opts: SweepOptions) -> None:
    """Raise _Surplus when a sampled trial (not an enqueued grid point or retry) would take the study past
    ``opts.trials``: another worker took the last slot between run_worker's count and this trial's start.
    (Optuna's MaxTrialsCallback stops a study after a trial ends; this check is at the start, where parallel
    workers race.)"""
    if frozen.system_attrs.get("fixed_params"):
        return
    c = study_counts(trial.study)
    if c["done"] + c["RUNNING"] - 1 + c["WAITING"] >= opts.trials:
        trial.set_user_attr("surplus", True)
        trial.set_user_attr("error", "surplus: another worker took the last trial")
        raise _Surplus(f"surplus trial {trial.number}: the study already has {opts.trials} trials")


def make_objective(spec: StudySpec, opts: SweepOptions, train_fn: Callable | None = None) -> Callable:
    """The objective: train ``opts.seeds`` runs of the trial's setting and return their mean PSNR."""
    import optuna

    from . import engine

    train_fn = train_fn or engine.train
    runs = (opts.out / "runs").resolve()

    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except (optuna.TrialPruned, _Surplus):
            raise
        except Exception as e:  # kept as the trial's "error": the study stays usable, the table says why
            msg = str(e) if isinstance(e, SandboxError) else f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", (msg.strip().splitlines() or [type(e).__name__])[0][:500])
            raise

    def run_trial(trial: optuna.Trial) -> float:
        frozen = frozen_trial(trial.study, trial.number)
        _check_not_surplus(trial, frozen, opts)
        cfg, label = _trial_config(trial, spec, opts, runs)
        previous = list(trial.user_attrs.get("run_dirs", []))  # a retried trial carries the dead worker's runs
        retry_of = _retry_of(frozen)
        if retry_of is not None:
            print(
                f"{opts.worker}trial {trial.number} retries trial {retry_of} ({label}), resuming its runs", flush=True
            )
        run_dirs: list[str] = []
        results = [
            _run_seed(trial, cfg, s, previous[s] if s < len(previous) else None, run_dirs, runs, train_fn, opts)
            for s in range(opts.seeds)
        ]
        return _record_trial(trial, results, run_dirs)

    return objective


def _trial_config(trial, spec: StudySpec, opts: SweepOptions, runs: Path) -> tuple[RunConfig, str]:
    """The RunConfig of the trial's setting (its values suggested now) and the setting's label; the attributes the
    report and the pruner read are set on the trial."""
    from . import engine

    values = {p.name: p.suggest(trial) for p in spec.params}
    label = spec.label(values)
    trial.set_user_attr("setting", label)
    trial.set_user_attr("host", socket.gethostname())
    cfg = check_overrides(_merged(spec.overrides(values), opts.overrides), f"trial {trial.number} ({label})")
    cfg = engine.quick_eval_sets(dataclasses.replace(cfg, out=str(runs)))
    trial.set_user_attr("seeds", [opts.seed + k for k in range(opts.seeds)])  # the report pairs runs on these
    trial.set_user_attr("run_steps", int(cfg.iters))  # the patient pruner's warm-up is a share of this
    return cfg, label


def _run_seed(
    trial, cfg: RunConfig, s: int, old: str | None, run_dirs: list[str], runs: Path, train_fn: Callable, opts
) -> dict[str, Any]:
    """The summary of the trial's run of seed ``opts.seed + s``: read back when ``old`` (the dead worker's run of a
    retried trial) finished, resumed when it has a checkpoint, else trained. The run directory is stored in the
    trial's ``run_dirs`` before training, so a worker killed mid-run leaves its path behind."""
    import optuna

    seed = opts.seed + s
    run_cfg = dataclasses.replace(cfg, seed=seed, name=f"trial{trial.number:04d}-seed{seed}")
    budget_s = cfg.budget_minutes * 60.0 if cfg.budget_minutes else None
    echo = print if opts.progress else (lambda _: None)

    def on_eval(step: int, metrics: dict) -> None:
        if s != 0:  # the first seed's run reports to the pruner
            return
        if budget_s is not None and metrics.get("wall"):  # the iterations the budget is projected to reach
            share = max(step / cfg.iters, metrics["wall"] / budget_s)
            trial.set_user_attr("run_steps", min(int(cfg.iters), max(step, round(step / share))))
        trial.report(metrics["psnr"], step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (validation {metrics['psnr']:.2f} dB)")

    old_dir = Path(old) if old is not None else None
    if old_dir is not None and (old_dir / "results.json").is_file():
        run_dirs.append(str(old_dir))
        return _summary_from_json(json.loads((old_dir / "results.json").read_text()))
    if old_dir is not None and (old_dir / "checkpoints" / "last.pth").is_file():
        run_dirs.append(str(old_dir))
        trial.set_user_attr("run_dirs", run_dirs)
        return _summary(train_fn(None, on_eval=on_eval, resume=old_dir, progress=opts.progress, echo=echo))
    run_dir = runs / run_cfg.name
    if run_dir.exists():  # a finished or crashed run of an older study in this folder: never overwrite
        run_cfg = dataclasses.replace(run_cfg, name=f"{run_cfg.name}-{int(time.time())}")
        run_dir = runs / run_cfg.name
    run_dirs.append(str(run_dir))
    trial.set_user_attr("run_dirs", run_dirs)
    return _summary(train_fn(run_cfg, on_eval=on_eval, progress=opts.progress, echo=echo))


def _record_trial(trial, results: list[dict[str, Any]], run_dirs: list[str]) -> float:
    """Store the runs' summaries on the trial; its value is the mean PSNR over the seeds."""
    psnrs = [r["psnr"] for r in results]
    first = results[0]
    trial.set_user_attr("run_dirs", run_dirs)
    trial.set_user_attr("eval_set", first["eval_set"])
    trial.set_user_attr("psnr_seeds", psnrs)
    trial.set_user_attr("ssim", statistics.fmean(r["ssim"] for r in results))
    trial.set_user_attr("params", first["params"])
    trial.set_user_attr("macs_per_mpx", first["macs_per_mpx"])
    trial.set_user_attr("train_minutes", statistics.fmean(r["train_minutes"] for r in results))
    trial.set_user_attr("iters", statistics.fmean(r["iters"] for r in results))
    trial.set_user_attr("iters_per_sec", statistics.fmean(r["iters_per_sec"] for r in results))
    return statistics.fmean(psnrs)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    _merge(out, json.loads(json.dumps(top, default=list)))
    return out


def _summary(result: Any) -> dict[str, Any]:
    eval_set, psnr = _first_eval_psnr(result)
    wall = result.history[-1]["wall"] if result.history else 0.0
    return {
        "eval_set": eval_set,
        "psnr": psnr,
        "ssim": float(result.final[eval_set]["ssim"]),
        "params": int(result.params),
        "macs_per_mpx": int(result.macs_per_mpx),
        "train_minutes": wall / 60.0,
        "iters": int(result.step),
        "iters_per_sec": float(result.train_iters_per_sec),
    }


def _summary_from_json(res: dict[str, Any]) -> dict[str, Any]:
    final = res["final"]
    eval_set = next(iter(final))
    history = res.get("history") or []
    return {
        "eval_set": eval_set,
        "psnr": float(final[eval_set]["psnr"]),
        "ssim": float(final[eval_set]["ssim"]),
        "params": int(res.get("params", 0)),
        "macs_per_mpx": int(res.get("macs_per_mpx", 0)),
        "train_minutes": (history[-1]["wall"] if history else 0.0) / 60.0,
        "iters": int(res.get("step", 0)),
        "iters_per_sec": float(res.get("train_iters_per_sec", 0.0)),
    }


def run_worker(spec: StudySpec, opts: SweepOptions, train_fn: Callable | None = None) -> dict[str, int]:
    """Run trials until the study holds ``opts.trials`` finished ones; returns :func:`study_counts`.

    Before each trial, trials whose worker died are failed and re-enqueued (RDB storages); while only such trials
    keep the study from finishing, the worker waits for their heartbeat to go stale and then runs the retry.
    """
    import optuna

    study, url = prepare_study(spec, opts)
    objective = make_objective(spec, opts, train_fn)
    heartbeat = bool(opts.heartbeat) and not url.startswith("journal:")  # Optuna's journal has no heartbeats
    echo = print
    waited = False
    finished: list = []
    while True:
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        c = study_counts(study)
        if c["WAITING"] > 0 or c["done"] + c["RUNNING"] < opts.trials:
            waited = False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(
                    objective,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[lambda s, t: finished.append(t)],
                )
            if finished:
                _echo_trial(study, finished.pop(), echo, opts.worker)
            continue
        if heartbeat and c["RUNNING"] > 0 and c["done"] < opts.trials:
            if not waited:
                echo(
                    f"{opts.worker}waiting for {c['RUNNING']} running trial(s) of other workers (a dead worker's "
                    f"trial is retried {2 * opts.heartbeat} s after its last heartbeat)"
                )
                waited = True
            time.sleep(max(1.0, opts.heartbeat / 2))
            continue
        return c


def _echo_trial(study, t, echo: Callable[[str], None], worker: str) -> None:
    """One line per finished trial."""
    t = frozen_trial(study, t.number)  # with the attributes set by the callbacks
    label = t.user_attrs.get("setting", t.params)
    if t.state.name == "COMPLETE":
        seeds = t.user_attrs.get("psnr_seeds", [])
        over = f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else ""
        echo(f"{worker}trial {t.number} [{label}]: {t.value:.3f} dB on {t.user_attrs.get('eval_set', '?')}{over}")
    elif t.state.name == "PRUNED":
        last = max(t.intermediate_values) if t.intermediate_values else 0
        echo(f"{worker}trial {t.number} [{label}]: pruned at step {last}")
    elif not t.user_attrs.get("surplus"):
        echo(f"{worker}trial {t.number} [{label}] failed: {t.user_attrs.get('error', 'failed')}")


# --------------------------------------------------------------------------------------------------------- reports
def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def ablation_rows(study, spec: StudySpec) -> list[dict[str, Any]]:
    """One row per setting (its trials pooled): mean/std PSNR over all their seeds, params, time, and ``run_dirs``
    ({seed: run directory} of its complete trials, for the paired comparison); file order for finite spaces, best
    first otherwise."""
    groups: dict[str, list] = {}
    base_seed = int((study.user_attrs.get("settings") or {}).get("seed", 0))
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus") or t.state.name in ("WAITING", "RUNNING"):
            continue
        if t.state.name == "FAIL" and "error" not in t.user_attrs:
            continue  # a dead worker's trial: its retry is the row
        groups.setdefault(t.user_attrs.get("setting") or spec.label(t.params), []).append(t)
    rows = []
    for label, trials in groups.items():
        done = [t for t in trials if t.state.name == "COMPLETE"]
        psnrs = [p for t in done for p in t.user_attrs.get("psnr_seeds", [t.value])]
        pruned = [t for t in trials if t.state.name == "PRUNED"]
        failed = [t for t in trials if t.state.name == "FAIL"]
        by_seed: dict[int, str] = {}
        for t in done:
            dirs = list(t.user_attrs.get("run_dirs", []))
            seeds = t.user_attrs.get("seeds") or [base_seed + k for k in range(len(dirs))]  # older trials: in order
            for k, d in zip(seeds, dirs):
                by_seed.setdefault(int(k), str(d))  # a setting run twice (TPE): its first run of each seed
        rows.append(
            {
                "setting": label,
                "psnr": statistics.fmean(psnrs) if psnrs else math.nan,
                "std": _std(psnrs),
                "runs": len(psnrs),
                "ssim": statistics.fmean(t.user_attrs["ssim"] for t in done) if done else math.nan,
                "params": done[0].user_attrs.get("params", 0) if done else 0,
                "train_minutes": statistics.fmean(t.user_attrs.get("train_minutes", 0.0) for t in done) if done else 0,
                "iters": statistics.fmean(t.user_attrs.get("iters", 0) for t in done) if done else 0,
                "pruned": len(pruned),
                "failed": len(failed),
                "error": failed[0].user_attrs.get("error", "") if failed else "",
                "eval_set": done[0].user_attrs.get("eval_set", "") if done else "",
                "run_dirs": by_seed,
                "first_trial": min(t.number for t in trials),
            }
        )
    if spec.finite:
        order = {spec.label(v): i for i, v in enumerate(spec.grid())}
        rows.sort(key=lambda r: order.get(r["setting"], len(order)))
    else:
        rows.sort(key=lambda r: -r["psnr"] if not math.isnan(r["psnr"]) else math.inf)
    return rows


def _why_unscored(row: dict[str, Any]) -> str:
    return "pruned" if row["pruned"] else (f"failed: {row['error']}" if row["failed"] else "not run")


def setting_labels(spec: StudySpec, rows: list[dict[str, Any]]) -> list[str]:
    """The settings ``--baseline`` may name: the grid's labels (finite studies), else the stored trials'."""
    return [spec.label(v) for v in spec.grid()] if spec.finite else [r["setting"] for r in rows]


def check_baseline(spec: StudySpec, baseline: str | None, rows: list[dict[str, Any]] | None = None) -> None:
    """A ``--baseline`` that names no setting is one error line listing them."""
    if baseline is None:
        return
    names = setting_labels(spec, rows or [])
    if baseline not in names:
        shown = ", ".join(map(repr, names[:30])) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
        raise SweepError(f"--baseline {baseline!r} is not one of the settings: {shown or 'none has run yet'}")


def _baseline(spec: StudySpec, rows: list[dict[str, Any]], asked: str | None) -> tuple[str, list[str]]:
    """The baseline of the comparison and a note when the default had to move (the first setting has no runs)."""
    scored = [r for r in rows if r["run_dirs"]]
    if asked is not None:
        check_baseline(spec, asked, rows)
        row = next((r for r in rows if r["setting"] == asked), None)
        if row is None or not row["run_dirs"]:
            raise SweepError(
                f"--baseline {asked!r} has no finished run ({_why_unscored(row) if row else 'not run'}); choose "
                f"another (finished: {', '.join(repr(r['setting']) for r in scored)})"
            )
        return asked, []
    first = spec.label(spec.grid()[0]) if spec.finite else min(rows, key=lambda r: r["first_trial"])["setting"]
    if any(r["setting"] == first for r in scored):
        return first, []
    row = next((r for r in rows if r["setting"] == first), None)
    fallback = scored[0] if spec.finite else min(scored, key=lambda r: r["first_trial"])
    why = _why_unscored(row) if row else "not run"
    return fallback["setting"], [
        f"The first setting `{first}` has no finished run ({why}): differences are to "
        f"`{fallback['setting']}` (choose another with --baseline)."
    ]


def _located(run_dir: str, out: Path | None) -> Path:
    """A run directory as stored, or under ``out/runs`` when the output folder was moved since."""
    path = Path(run_dir)
    if not path.exists() and out is not None and (out / "runs" / path.name).exists():
        return out / "runs" / path.name
    return path


@dataclass
class AblationReport:
    """The ablation table of a study: its rows and, when every run has per-image results, the paired comparison."""

    rows: list[dict[str, Any]]
    comparison: Any = None  # sandbox.stats.Comparison, None without per-image results
    eval_set: str = ""
    degradation: str = ""
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # runs without per_image.csv (the table falls back to mean ± std)


def ablation_report(study, spec: StudySpec, baseline: str | None = None, out: Path | None = None) -> AblationReport:
    """Rows of :func:`ablation_rows` and the paired comparison of the complete trials' runs on the first evaluation
    set (:func:`sandbox.stats.runs_table` and :func:`sandbox.stats.compare`, baseline ``baseline`` or the first
    setting). Runs evaluated with different degradations or on different images, or a ``baseline`` that names no
    finished setting, are one :class:`SandboxError` line."""
    from .evaluate import PER_IMAGE_FILE
    from .stats import compare, runs_table

    rows = ablation_rows(study, spec)
    check_baseline(spec, baseline, rows)
    scored = [r for r in rows if r["run_dirs"]]
    eval_set = next((r["eval_set"] for r in rows if r["eval_set"]), "")
    if not scored:
        return AblationReport(rows, eval_set=eval_set)
    runs = {r["setting"]: {k: _located(d, out) for k, d in r["run_dirs"].items()} for r in scored}
    missing = [
        f"{name} seed {k}" for name, by in runs.items() for k, d in by.items() if not (d / PER_IMAGE_FILE).is_file()
    ]
    if missing:
        return AblationReport(rows, eval_set=eval_set, missing=missing)
    base, notes = _baseline(spec, rows, baseline)
    scores, set_name, degradation = runs_table({base: runs[base], **runs}, set_name=eval_set or None)
    comparison = compare(scores, baseline=base)
    return AblationReport(rows, comparison, set_name, degradation, notes)


def ablation_markdown(study, spec: StudySpec, storage: str, baseline: str | None = None) -> str:
    return _ablation_markdown(study, spec, storage, ablation_report(study, spec, baseline))


def _ablation_markdown(study, spec: StudySpec, storage: str, rep: AblationReport, forest: str | None = None) -> str:
    """ablation.md: the paired comparison's columns beside params, iterations, minutes and pruned/failed trials, and
    the comparison's footer; without per-image results, mean ± std over the seeds as before, with a note."""
    from .cli import markdown_table
    from .complexity import human

    comp = rep.comparison
    eval_set = rep.eval_set or "validation"
    c = study_counts(study)
    trials_line = (
        f"Trials: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['error']} failed with an error, "
        f"{c['RUNNING']} running, {c['WAITING']} waiting. Storage: {_redact(storage)}."
    )
    head = [f"# Study `{study.study_name}`", "", spec.description.strip(), ""]

    def extra(r: dict[str, Any]) -> list[Any]:
        scored = bool(r["runs"])
        return [
            f"{r['ssim']:.4f}" if scored else "",
            human(r["params"]) if r["params"] else "",
            f"{r['iters']:.0f}" if scored else "",
            f"{r['train_minutes']:.1f}" if scored else "",
            r["pruned"] + r["failed"] if (r["pruned"] or r["failed"]) else "",
        ]

    extra_header = ["SSIM", "params", "iters", "train min", "pruned/failed"]
    if comp is None:
        best = max((r["psnr"] for r in rep.rows if not math.isnan(r["psnr"])), default=math.nan)
        table = []
        for r in rep.rows:
            if r["runs"]:
                psnr = f"{r['psnr']:.3f} ± {r['std']:.3f}" if r["runs"] > 1 else f"{r['psnr']:.3f}"
                if r["psnr"] == best:
                    psnr = f"**{psnr}**"
            else:
                psnr = _why_unscored(r)
            table.append([r["setting"], psnr, r["runs"], *extra(r)])
        head += [
            f"PSNR (dB) on {eval_set}: mean ± sample std over the runs (seeds) of each setting; SSIM (mean); params "
            "of the network; iterations and training minutes per run; trials pruned or failed.",
            trials_line,
            "",
            "",
        ]
        if rep.missing:
            shown = ", ".join(rep.missing[:5]) + (", ..." if len(rep.missing) > 5 else "")
            runs_total = sum(len(r["run_dirs"]) for r in rep.rows)
            head[-2:-2] = [
                "",
                f"**No paired intervals:** per-image results (per_image.csv) are missing for {len(rep.missing)} of "
                f"{runs_total} runs ({shown}; runs made before the engine wrote them, or moved), so this is the mean "
                "± std of the runs' PSNRs, with no interval, p-value or rank.",
            ]
        header = ["setting", f"PSNR {eval_set}", "runs", *extra_header]
        return "\n".join(head) + markdown_table(header, table, "lrr" + "r" * len(extra_header)) + "\n"

    names = {st.name for st in comp.settings}
    table = []
    for r in rep.rows:
        if r["setting"] in names:
            cells = comp.cells(r["setting"])
            mean = cells["mean"]
            if comp.ranks[r["setting"]] == 1 and any(v != 1 for v in comp.ranks.values()):
                mean = f"**{mean}**"
            table.append([r["setting"], mean, cells["delta"], cells["p"], cells["rank"], *extra(r)])
        else:
            table.append([r["setting"], _why_unscored(r), "", "", "", *extra(r)])
    degradation = f" ({rep.degradation})" if rep.degradation else ""
    head += [
        f"PSNR (dB) per image of {eval_set}{degradation}, {comp.images} images, for each seed of each setting; seed k "
        "gives every setting the same patches, noise draws and initialisation, so settings are compared paired on "
        "seeds and images (see under the table). Bold: the leading rank group, when a setting is resolved from it. "
        "SSIM (mean); params of the network; iterations and training minutes per run; trials pruned or failed.",
        trials_line,
        "",
        "",
    ]
    header = ["setting", *comp.columns(), *extra_header]
    text = "\n".join(head) + markdown_table(header, table, "l" + "r" * (len(header) - 1))
    text += "\n\n" + comp.footer()
    for note in rep.notes:
        text += "\n\n" + note
    if forest:
        text += f"\n\n![difference to {comp.baseline}]({forest})"
    return text + "\n"


ABLATION_CSV = [
    "setting", "status", "eval_set", "baseline", "seeds", "mean", "ci_low", "ci_high", "seed_sd", "delta", "delta_low",
    "delta_high", "p", "p_holm", "resolved", "rank", "ssim", "params", "iters", "train_minutes", "pruned", "failed",
    "error",
]  # fmt: skip


def ablation_csv(rep: AblationReport) -> str:
    """ablation.csv: one row per setting, the comparison's :meth:`~sandbox.stats.Comparison.records` (empty where a
    setting has no score, or no interval without per-image results) beside the study's columns."""
    records = {r["setting"]: r for r in rep.comparison.records()} if rep.comparison is not None else {}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ABLATION_CSV, lineterminator="\n")
    w.writeheader()
    for r in rep.rows:
        status = "complete" if r["runs"] else ("pruned" if r["pruned"] else "failed")
        rec = records.get(r["setting"])
        if rec is None and r["runs"] and rep.comparison is None:  # no per-image results: mean and std of the runs
            rec = {"seeds": r["runs"], "mean": r["psnr"], "seed_sd": r["std"] if r["runs"] > 1 else math.nan}
        row = {
            "setting": r["setting"],
            "status": status,
            "eval_set": rep.eval_set,
            "baseline": rep.comparison.baseline if rep.comparison is not None else "",
            **{k: v for k, v in (rec or {}).items() if k != "setting"},
            "ssim": r["ssim"] if r["runs"] else math.nan,
            "params": r["params"] or "",
            "iters": r["iters"] if r["runs"] else "",
            "train_minutes": r["train_minutes"] if r["runs"] else "",
            "pruned": r["pruned"],
            "failed": r["failed"],
            "error": r["error"],
        }
        w.writerow({k: _csv_cell(row.get(k, "")) for k in ABLATION_CSV})
    return buf.getvalue()


def _csv_cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.10g}"
    return v


def trials_csv(study) -> str:
    keys: list[str] = []
    for t in study.get_trials(deepcopy=False):
        for k in list(t.params) + [f"attr_{a}" for a in t.user_attrs]:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", "value", "duration_s", *keys])
    for t in study.get_trials(deepcopy=False):
        dur = t.duration.total_seconds() if t.duration else ""
        cells = []
        for k in keys:
            v = t.user_attrs.get(k[5:]) if k.startswith("attr_") else t.params.get(k)
            cells.append(json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
        w.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.4f}", dur, *cells])
    return buf.getvalue()


def dashboard_command(url: str) -> str:
    target = url[len("journal:") :] if url.startswith("journal:") else _redact(url)
    return f"pip install optuna-dashboard && optuna-dashboard {target}"


def write_reports(study, spec: StudySpec, out: Path, storage: str, baseline: str | None = None) -> dict[str, Path]:
    """trials.csv, ablation.md, ablation.csv, forest.png, history/importance plots (PNG and HTML); returns the paths
    written. Everything is computed before the first file is written, so an error (a ``baseline`` that names no
    finished setting, runs of different degradations or images) leaves the previous reports as they were."""
    import optuna

    from .evaluate import write_text_atomic
    from .stats import forest_plot

    rep = ablation_report(study, spec, baseline, out)
    comp = rep.comparison
    forest = "forest.png" if comp is not None and comp.differences else None
    table = _ablation_markdown(study, spec, storage, rep, forest)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "trials.csv", "table": out / "ablation.md", "ablation_csv": out / "ablation.csv"}
    write_text_atomic(paths["csv"], trials_csv(study))
    write_text_atomic(paths["table"], table)
    write_text_atomic(paths["ablation_csv"], ablation_csv(rep))
    if forest:
        title = f"{study.study_name} on {rep.eval_set}: difference to {comp.baseline}"
        paths["forest_png"] = forest_plot(comp, out / forest, title=title)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    plots = {"history": "plot_optimization_history"}
    varying = [p.name for p in spec.params if len({json.dumps(t.params.get(p.name)) for t in complete}) > 1]
    if len(complete) >= 2 and varying:
        plots["importance"] = "plot_param_importances"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, fn in plots.items():
            if not complete:
                break
            try:
                ax = getattr(optuna.visualization.matplotlib, fn)(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                png = out / f"{key}.png"
                with atomic_path(png) as tmp:
                    fig.savefig(tmp, dpi=110)
                plt.close(fig)
                paths[f"{key}_png"] = png
                html = out / f"{key}.html"
                getattr(optuna.visualization, fn)(study).write_html(str(html), include_plotlyjs="directory")
                paths[f"{key}_html"] = html
            except ImportError:
                continue  # plotly absent: PNG only
    return paths
