"""One way to build a network from a spec for a task: the options it accepts, in one precedence order, and
optionally its weights.

Training (``train_config.build_network``), evaluation (``evaluate.load_network``), the BasicSR engine's check and
``experiments/visualize.py`` all build through :func:`network_spec` and :func:`build_network_for`, so a network gets
the same options from the same inputs everywhere.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

from torch import nn

from .errors import OptionError

__all__ = ["build_network_for", "network_spec"]


def network_spec(
    arch: str | Mapping[str, Any],
    task: Any = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    fresh: bool = True,
    data_root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The full spec ``{"name": ..., **options}`` of network ``arch`` for ``task``, in increasing precedence:

    1. ``defaults`` (e.g. a run config's ``mixer`` and ``preset``), ``data_root``, and from ``task`` its channels
       (``in_chans``, only for a ``fresh`` network: weights bring their own) and its name (``task``), each only where
       the network takes the option, and for networks registered with ``sigma_input`` its noise level (``sigma``);
    2. the options of the spec ``arch`` itself (``"swinir:window_size=8"``);
    3. ``flags``: options given on the command line, set where the network takes them (or takes ``**kwargs``), a
       one-line :class:`OptionError` naming the flag otherwise; None values are skipped;
    4. ``overrides`` (a run config's ``arch_options``), set as given: an option the network does not take fails
       when it is built, naming the options it takes.
    """
    from .registry import ARCHS, parse_spec

    name, spec_options = parse_spec(copy.deepcopy(arch), "network")
    entry = ARCHS.entry(name)
    accepted = entry.options()
    takes_kwargs = entry.takes_kwargs()
    base = dict(copy.deepcopy(dict(defaults or {})))
    if data_root is not None:
        base["data_root"] = str(data_root)
    if task is not None:
        if fresh:
            base["in_chans"] = task.channels
        base["task"] = task.name
    options = {k: v for k, v in base.items() if k in accepted}
    if task is not None and entry.meta.get("sigma_input") and getattr(task, "sigma", None) is not None:
        options["sigma"] = task.sigma  # the network declares a noise-level input
    options.update(spec_options)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in accepted and not takes_kwargs:
            raise OptionError(f"network {name!r} has no option {key!r} (--{key.replace('_', '-')})")
        options[key] = copy.deepcopy(value)
    options.update(copy.deepcopy(dict(overrides or {})))
    return {"name": name, **options}


def build_network_for(
    arch: str | Mapping[str, Any],
    task: Any = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    checkpoint: Any = None,
    source: str = "checkpoint",
) -> nn.Module:
    """Build the network of :func:`network_spec` (same arguments) and, with ``checkpoint`` (an already read
    checkpoint or state_dict), load its weights strictly (a one-line error naming ``source`` for weights of another
    network). The network carries its spec as ``arch_spec``. It draws from the global torch RNG only while built.
    """
    from .checkpoint import load_checkpoint
    from .registry import build_arch

    spec = network_spec(
        arch,
        task,
        defaults=defaults,
        flags=flags,
        overrides=overrides,
        fresh=checkpoint is None,
        data_root=data_root,
    )
    net = build_arch(spec)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, strict=True, source=source)
    return net
