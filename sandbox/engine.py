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
so that their differences come from the setting alone. The resumed run matches at the same intra-op thread count
(``torch.get_num_threads()``, recorded in the checkpoints; a resume with another count warns in one line).

This module holds the loop (:func:`train`, its state a :class:`LoopState`) and re-exports the names callers import
from it; the parts live in :mod:`sandbox.train_config` (checks, resolution, the network), :mod:`sandbox.pipeline`
(patches and validation items), :mod:`sandbox.optim` (optimiser, schedule, loss, EMA, bf16), :mod:`sandbox.runstate`
(RNG states, checkpoints, run directory, events) and :mod:`sandbox.measure` (validation scores, speed, results.md).
Tests and tools hook in through :class:`TrainCallback` objects passed as ``callbacks``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import nn

from .config import RunConfig, config_dict, load_config_file
from .errors import SandboxError
from .measure import MACS_SIZE, crops_png, infer_ms_per_mpx, results_markdown, validate
from .optim import (
    BF16_CPU_NOTE,
    EMA,
    autocast_for,
    cpu_has_bf16,
    loss_fn,
    lr_factor,
    make_optimizer,
    set_lr,
    use_bf16,
)
from .pipeline import PatchBatches, batches, step_seed, train_images, val_items
from .runstate import (
    Events,
    check_threads,
    checkpoint_state,
    default_name,
    finite_weights,
    load_network_state,
    new_run_dir,
    plain,
    relative,
    remove_run_temps,
    seed_everything,
    set_rng_state,
    warn,
)
from .train_config import (
    SHAPE_KEYS,
    RunSetup,
    build_network,
    build_task_from,
    check_config,
    quick_eval_sets,
    read_run_config,
    resolve_run,
    write_config,
)
from .utils import human, write_text_atomic

# names other modules and the tests import from sandbox.engine, kept where they moved (re-exports)
_Events = Events
_loss = loss_fn
_train_images = train_images

__all__ = [
    "RunResult",
    "TrainingDiverged",
    "TrainCallback",
    "train",
    "build_network",
    "build_task_from",
    "check_config",
    "load_config_file",
    "read_run_config",
    "quick_eval_sets",
    "PatchBatches",
    "step_seed",
    "lr_factor",
    "use_bf16",
    "cpu_has_bf16",
    "BF16_CPU_NOTE",
    "SHAPE_KEYS",
]


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


class TrainCallback:
    """Hooks :func:`train` calls (pass instances in ``callbacks``); every method is optional and does nothing here.

    ``on_checkpoint_saved(step, path)`` runs right after ``checkpoints/last.pth`` of iteration ``step`` was written
    (tests kill the process there to check that a resumed run equals an uninterrupted one).
    """

    def on_checkpoint_saved(self, step: int, path: Path) -> None:
        pass


# ---------------------------------------------------------------------------------------------------- run state
@dataclass
class _Run:
    """What stays fixed while the loop runs: the resolved configuration, the network and its optimiser, the run
    directory."""

    config: RunConfig
    task: Any
    device: torch.device
    net: nn.Module  # the training weights
    train_net: nn.Module  # net, or torch.compile(net)
    eval_net: nn.Module  # the EMA module (or net without EMA): validation and the final evaluation
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    trainable: list[nn.Parameter]
    use_amp: bool  # bf16 autocast
    autocast: Callable[[], ContextManager[Any]]
    val_items: list  # (name, gt uint8, degraded float32)
    run_dir: Path
    events: Events
    arch_spec: dict[str, Any]
    on_eval: Callable[[int, dict], None] | None
    callbacks: Sequence[Any]

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pth"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pth"


@dataclass
class LoopState:
    """What the loop changes: progress, the validation history, the last save, the averaging window of the loss."""

    step: int = 0  # iterations done
    wall: float = 0.0  # training seconds (making batches and steps; not validation or saving)
    best_psnr: float = -math.inf
    history: list[dict] = field(default_factory=list)
    saved_step: int | None = None  # step of the last last.pth (None: none saved yet)
    stopped: str | None = None  # iters, budget, interrupted (None: still running)
    last_val: float | None = None  # last validation PSNR, for the progress bar
    start_step: int = 0  # step and wall this process started at: iters_per_sec of the validation events
    start_wall: float = 0.0
    window_loss: float = 0.0  # sum, count and seconds of the iterations since the last train event
    window_n: int = 0
    window_t: float = 0.0
    bar: Any = None  # tqdm bar, or None

    def progress(self) -> dict[str, Any]:
        return {"step": self.step, "best_psnr": self.best_psnr, "history": self.history, "wall": self.wall}


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


# --------------------------------------------------------------------------------------------------------- train
def train(
    config: RunConfig | None,
    on_eval: Callable[[int, dict], None] | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    callbacks: Sequence[TrainCallback] = (),
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
        callbacks: :class:`TrainCallback` objects (any object with some of its methods).

    Raises:
        TrainingDiverged: the loss, gradients or weights became nan/inf (``stopped="nan"``); the message names the
            last good checkpoint, which is never overwritten after the divergence.
        SandboxError: bad configuration, data or resume directory, before anything is written.
    """
    from .complexity import count_params

    if echo is None:
        echo = print if progress else (lambda _: None)
    # configuration, task, data, network: everything is checked before the run directory exists
    setup = resolve_run(config, resume)
    seed_everything(setup.config.seed)
    net = build_network(setup.config, setup.task)
    if setup.checkpoint is not None:
        load_network_state(net, setup.checkpoint, setup.last_path)
    images, data_desc = train_images(setup.task, setup.config, setup.root)
    val = val_items(setup.task, setup.root, setup.eval_sets, setup.config.val_images, setup.config.val_crop)
    params = count_params(net)
    run, state = _open_run(setup, net, val, on_eval, callbacks)
    echo(_summary(setup, run, state.step, params, data_desc))
    _log_start(setup, run, state, params, data_desc)

    dataset = PatchBatches(images, run.task, run.config.patch_size, run.config.batch_size, run.config.seed)
    _train_loop(run, state, dataset, echo, progress)
    _finish_training(run, state)
    rate = state.step / state.wall if state.wall > 0 else 0.0
    run.events("stop", stopped=state.stopped, step=state.step, wall=state.wall, iters_per_sec=rate)
    if state.stopped == "interrupted":
        echo(f"interrupted at iteration {state.step}; continue with: python experiments/run.py --resume {run.run_dir}")
        history, best = state.history, state.best_psnr
        return RunResult(run.run_dir, run.config, state.step, best, {}, history, params, 0, rate, 0.0, "interrupted")
    return _final_evaluation(run, state, setup.root, setup.eval_sets, params, rate, progress)


def _open_run(
    setup: RunSetup,
    net: nn.Module,
    val: list,
    on_eval: Callable[[int, dict], None] | None,
    callbacks: Sequence[Any],
) -> tuple[_Run, LoopState]:
    """The run directory (created, or the resumed one cleaned of interrupted saves), the optimiser and the EMA on
    the device, and the loop state: fresh, or the resumed checkpoint's (weights, optimiser, progress, RNG states)."""
    config = setup.config
    if setup.resume_dir is None:
        run_dir = new_run_dir(config, default_name(config, setup.task))
        config = dataclasses.replace(config, **setup.resolved(), name=run_dir.name)
    else:
        run_dir = setup.resume_dir
        config = dataclasses.replace(config, **setup.resolved())
    if setup.resume_dir is None or setup.changes:
        write_config(run_dir, config)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    remove_run_temps(run_dir / "checkpoints")  # a kill during a save leaves its temporary file behind

    net.to(setup.device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    ema = EMA(net, config.ema) if config.ema > 0 else None
    state = LoopState()
    if setup.checkpoint is not None:
        _restore_state(setup.checkpoint, state, ema, net, optimizer)
    use_amp = use_bf16(config.amp, setup.device)
    run = _Run(
        config=config,
        task=setup.task,
        device=setup.device,
        net=net,
        train_net=torch.compile(net) if config.compile else net,
        eval_net=ema.module if ema is not None else net,
        ema=ema,
        optimizer=optimizer,
        trainable=trainable,
        use_amp=use_amp,
        autocast=autocast_for(use_amp, setup.device),
        val_items=val,
        run_dir=run_dir,
        events=Events(run_dir / "metrics.jsonl"),
        arch_spec=getattr(net, "arch_spec", {"name": config.arch}),
        on_eval=on_eval,
        callbacks=list(callbacks),
    )
    return run, state


def _restore_state(ckpt: dict, state: LoopState, ema: EMA | None, net: nn.Module, optimizer) -> None:
    """A resumed run's EMA weights, optimiser, progress and global RNG states (the weights are already loaded)."""
    from .checkpoint import load_checkpoint

    if ema is not None and ckpt.get("ema") is not None:
        load_checkpoint(ema.module, ckpt["ema"], strict=True)
    elif ema is not None:
        ema.module.load_state_dict(net.state_dict())
    optimizer.load_state_dict(ckpt["optimizer"])
    state.step, state.wall = int(ckpt["step"]), float(ckpt.get("wall", 0.0))
    state.best_psnr = float(ckpt.get("best_psnr", -math.inf))
    state.history = [dict(h) for h in ckpt.get("history", [])]
    set_rng_state(ckpt["rng"])
    state.start_step, state.start_wall, state.saved_step = state.step, state.wall, state.step
    state.last_val = state.history[-1]["psnr"] if state.history else None
    threads = check_threads(ckpt)
    if threads is not None:
        warn(threads)


def _summary(setup: RunSetup, run: _Run, step: int, params: int, data_desc: str) -> str:
    """The lines printed when a run starts: network, task, data, training settings."""
    from .data import EMBEDDED_NOTE

    config, eval_sets, spec = run.config, setup.eval_sets, run.arch_spec
    mixer_txt = f", mixer {config.mixer}" if "mixer" in spec else ""
    budget_txt = f", budget {config.budget_minutes:g} min" if config.budget_minutes else ""
    cpu_note = run.use_amp and run.device.type == "cpu" and not cpu_has_bf16()
    return (
        f"{'resuming' if setup.resume_dir is not None else 'run'} {relative(run.run_dir)} at step {step}\n"
        f"  network: {spec.get('name')}{mixer_txt}, preset {spec.get('preset', '-')}: {human(params)} params\n"
        f"  task: {run.task.describe()}\n"
        f"  data: {data_desc}; validation: {len(run.val_items)} image(s) of "
        f"{eval_sets[0] if eval_sets else 'the embedded eval split'}"
        f"{f' (centre {config.val_crop}px)' if config.val_crop else ''}; final: "
        f"{', '.join(eval_sets) if eval_sets else 'embedded eval split'}\n"
        f"  training: {config.iters} iters{budget_txt}, batch {config.batch_size} x {config.patch_size}px, "
        f"{config.optimizer} lr {config.lr:g} {config.schedule}, {config.loss}, ema {config.ema:g}, "
        f"seed {config.seed}, device {run.device}{', bf16' if run.use_amp else ''}"
        + (f"\n  changed on resume: {setup.changes}" if setup.changes else "")
        + (f"\n  note: {EMBEDDED_NOTE}" if setup.root is None else "")
        + (f"\n  note: {BF16_CPU_NOTE}" if cpu_note else "")
    )


def _log_start(setup: RunSetup, run: _Run, state: LoopState, params: int, data_desc: str) -> None:
    """The first event of this process: ``start``, or ``resume`` after dropping what a killed process logged past
    its checkpoint."""
    threads = torch.get_num_threads()
    if setup.resume_dir is None:
        config = config_dict(run.config)
        run.events("start", config=config, params=params, device=str(run.device), data=data_desc, threads=threads)
    else:
        dropped = run.events.rewind(state.step)
        changes, device = setup.changes, str(run.device)
        run.events("resume", step=state.step, changes=changes, device=device, dropped_events=dropped, threads=threads)


# ---------------------------------------------------------------------------------------------------------- loop
def _train_loop(run: _Run, st: LoopState, dataset: PatchBatches, echo: Callable[[str], None], progress: bool) -> None:
    """Iterations ``st.step + 1`` to ``iters``, each: a step, the train event, validation and saving when due, then
    ``on_eval``. Stops early at the budget, on Ctrl-C (after saving) or when ``on_eval`` raises (after saving)."""
    config = run.config
    if progress and st.step < config.iters:
        st.bar = _progress_bar(config.iters, st.step, run.run_dir.name)
    st.stopped = _stop_reason(config, st)  # a run resumed at its end trains no more
    run.net.train()
    try:
        with _StopFlag(echo) as interrupt:
            todo = batches(dataset, st.step + 1, config.iters, config.workers) if st.stopped is None else iter(())
            t0 = time.perf_counter()  # the budget counts making the batch and the step, not validation/saving
            for clean, degraded in todo:
                lr, value = _train_step(run, st, clean, degraded)
                dt = time.perf_counter() - t0
                st.wall += dt
                _log_train(run, st, value, lr, dt)
                st.stopped = _stop_reason(config, st)
                if interrupt.set:
                    if st.saved_step != st.step:
                        _save_last(run, st)
                    st.stopped = "interrupted"
                    break
                metrics = None
                if _due(config.eval_every, st.step) or st.stopped:
                    metrics = _validate_and_report(run, st)
                    st.last_val = metrics["psnr"]
                if _due(config.save_every, st.step) or st.stopped:
                    _save_last(run, st)
                _update_bar(st, value)
                if metrics is not None and run.on_eval is not None:
                    _call_on_eval(run, st, metrics)
                if st.stopped:
                    break
                t0 = time.perf_counter()
    except KeyboardInterrupt:
        run.events("stop", stopped="interrupted", step=st.step, saved_step=st.saved_step)
        raise
    finally:
        if st.bar is not None:
            st.bar.close()


def _train_step(run: _Run, st: LoopState, clean: torch.Tensor, degraded: torch.Tensor) -> tuple[float, float]:
    """One optimiser step on iteration ``st.step + 1``'s batch, each (B, C, P, P), then the EMA; returns the
    learning rate and the loss of the step."""
    config, device = run.config, run.device
    clean = clean.to(device, non_blocking=True)
    degraded = degraded.to(device, non_blocking=True)
    lr = config.lr * lr_factor(config, st.step, st.wall)
    set_lr(run.optimizer, lr)
    with run.autocast():
        out = run.train_net(degraded)  # (B, C, P, P)
    loss = loss_fn(out, clean, config)
    value = loss.item()
    if not math.isfinite(value):
        _diverged(run, st, "loss", value)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(run.trainable, config.grad_clip))
        if not math.isfinite(norm):
            _diverged(run, st, "the gradients", norm)
    run.optimizer.step()
    st.step += 1
    if run.ema is not None:
        run.ema.update(run.net, st.step)
    if device.type == "cuda" and st.step % config.log_every == 0:
        torch.cuda.synchronize(device)  # the train event's speed then counts the GPU's work
    return lr, value


def _due(every: int, step: int) -> bool:
    """Whether a period of ``every`` iterations (0: never) ends at ``step``."""
    return bool(every) and step % every == 0


def _stop_reason(config: RunConfig, st: LoopState) -> str | None:
    """``budget`` once the training time reaches the budget before ``iters``, ``iters`` at ``iters``, else None."""
    budget_s = config.budget_minutes * 60.0 if config.budget_minutes else None
    if budget_s is not None and st.wall >= budget_s and st.step < config.iters:
        return "budget"
    if st.step >= config.iters:
        return "iters"
    return None


def _log_train(run: _Run, st: LoopState, value: float, lr: float, dt: float) -> None:
    """Add the step to the loss window; every ``log_every`` iterations, log its mean as a ``train`` event."""
    st.window_loss, st.window_n, st.window_t = st.window_loss + value, st.window_n + 1, st.window_t + dt
    if st.step % run.config.log_every == 0:
        rate = st.window_n / st.window_t if st.window_t > 0 else 0.0
        loss = st.window_loss / st.window_n
        run.events("train", step=st.step, loss=loss, lr=lr, wall=st.wall, iters_per_sec=rate)
        st.window_loss, st.window_n, st.window_t = 0.0, 0, 0.0


def _progress_bar(total: int, initial: int, desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)


def _update_bar(st: LoopState, value: float) -> None:
    if st.bar is not None:
        post = f"loss {value:.4g}" + (f", val {st.last_val:.2f} dB" if st.last_val is not None else "")
        st.bar.set_postfix_str(post, refresh=False)
        st.bar.update(1)


def _checkpoint(run: _Run, st: LoopState) -> dict[str, Any]:
    ema_module = run.ema.module if run.ema is not None else None
    config = config_dict(run.config)
    return checkpoint_state(config, run.task.spec, run.arch_spec, run.net, ema_module, run.optimizer, st.progress())


def _save_last(run: _Run, st: LoopState) -> None:
    """Save ``last.pth`` (never weights that are no longer finite), then call the callbacks."""
    from .checkpoint import save_atomic

    if not finite_weights(run.net):
        _diverged(run, st, "the weights", float("nan"), st.step)
    remove_run_temps(run.last_path.parent)  # left by a process killed during a save (of last.pth or best.pth)
    save_atomic(_checkpoint(run, st), run.last_path)
    st.saved_step = st.step
    for callback in run.callbacks:
        hook = getattr(callback, "on_checkpoint_saved", None)
        if hook is not None:
            hook(st.step, run.last_path)


def _validate_and_report(run: _Run, st: LoopState) -> dict[str, float]:
    """Validation at ``st.step``: history, the ``val`` event, ``best.pth`` on a new best; returns what ``on_eval``
    gets."""
    from .checkpoint import save_atomic

    scores = validate(run.eval_net, run.val_items, run.device)
    rate = (st.step - st.start_step) / (st.wall - st.start_wall) if st.wall > st.start_wall else 0.0
    point = {"step": st.step, "wall": st.wall, "psnr": scores["psnr"], "ssim": scores["ssim"]}
    st.history.append(point)
    run.events("val", **point, iters_per_sec=rate)
    if scores["psnr"] > st.best_psnr:
        st.best_psnr = scores["psnr"]
        if finite_weights(run.net):
            remove_run_temps(run.best_path.parent)
            save_atomic(_checkpoint(run, st), run.best_path)
    return {**scores, "step": st.step, "wall": st.wall, "iters_per_sec": rate}


def _call_on_eval(run: _Run, st: LoopState, metrics: dict[str, float]) -> None:
    """``on_eval``; if it raises (a pruned trial), save ``last.pth``, log ``stopped="pruned"`` and re-raise."""
    try:
        run.on_eval(st.step, metrics)
    except BaseException:
        if st.saved_step != st.step:
            _save_last(run, st)
        run.events("stop", stopped="pruned", step=st.step)
        raise


def _diverged(run: _Run, st: LoopState, what: str, value: float, iteration: int | None = None) -> None:
    """Log ``stopped="nan"`` and raise :class:`TrainingDiverged` naming the last good checkpoint."""
    iteration = st.step + 1 if iteration is None else iteration
    kind = "nan" if math.isnan(value) else "inf"
    run.events("stop", stopped="nan", step=st.step, iteration=iteration, what=what)
    if st.bar is not None:
        st.bar.close()
    if st.saved_step is None:
        where = "no checkpoint was saved before it"
    else:
        where = f"the last good checkpoint is {relative(run.last_path)} (step {st.saved_step})"
    raise TrainingDiverged(
        f"{what} became {kind} at iteration {iteration}; {where} (lower --lr or set --set grad_clip=1.0)"
    )


def _finish_training(run: _Run, st: LoopState) -> None:
    """After the loop: validate and save the final step unless interrupted (where both happened already)."""
    if st.stopped is None:  # the loader ended without reaching iters (cannot happen unless iters shrank)
        st.stopped = "iters"
    if st.stopped != "interrupted":
        if not st.history or st.history[-1]["step"] != st.step:  # e.g. resumed at the end: validate once
            _validate_and_report(run, st)
        if st.saved_step != st.step:
            _save_last(run, st)


# -------------------------------------------------------------------------------------------- final evaluation
def _final_evaluation(
    run: _Run,
    st: LoopState,
    root: Path | None,
    eval_sets: list[str] | None,
    params: int,
    rate: float,
    progress: bool,
) -> RunResult:
    """Evaluate the EMA (or the final) weights on the eval sets; write per_image.csv, crops.png, results.json and
    results.md; log the ``final`` event."""
    from .complexity import count_macs
    from .evaluate import PER_IMAGE_FILE, evaluate, network_restorer

    task, device, net, run_dir = run.task, run.device, run.eval_net, run.run_dir
    result = evaluate(network_restorer(net, device), task, eval_sets, root, method=run_dir.name, progress=progress)
    final = result.summary()
    result.write_csv(run_dir / PER_IMAGE_FILE)  # before results.json, which names it (rewritten by a resumed run)
    macs = count_macs(net, (1, task.channels, MACS_SIZE, MACS_SIZE), device) * 16
    infer = infer_ms_per_mpx(net, task.channels, device)
    crops_png(run_dir / "crops.png", net, run.val_items, device)
    out = RunResult(
        run_dir, run.config, st.step, st.best_psnr, final, st.history, params, macs, rate, infer, st.stopped
    )
    record = {
        "run_dir": str(run_dir),
        "config": config_dict(run.config),
        "arch_spec": run.arch_spec,
        "task": task.describe(),
        "step": st.step,
        "stopped": st.stopped,
        "best_psnr": st.best_psnr,
        "final": final,
        "per_image": PER_IMAGE_FILE,
        "history": st.history,
        "params": params,
        "macs_per_mpx": macs,
        "train_iters_per_sec": rate,
        "infer_ms_per_mpx": infer,
        "wall": st.wall,
        "eval_seconds": result.seconds,
        "device": str(device),
        "weights": "ema" if run.ema is not None else "final",
        "note": result.note,
    }
    write_text_atomic(run_dir / "results.json", json.dumps(plain(record), indent=2, allow_nan=False) + "\n")
    write_text_atomic(run_dir / "results.md", results_markdown(out, result.table(), task.describe(), result.note))
    events = {"final": final, "params": params, "macs_per_mpx": macs, "infer_ms_per_mpx": infer}
    run.events("final", **events, eval_seconds=result.seconds)
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use experiments/run.py")
