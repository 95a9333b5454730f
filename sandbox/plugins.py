"""Plugins: user modules that register their own mixers (or networks, tasks).

Three ways to load one, all equivalent once imported:

- ``--plugin my_pkg.my_mixers`` on any command (a dotted module importable from the working directory, or a path
  to a ``.py`` file); repeat the flag or separate with commas;
- ``SANDBOX_PLUGINS=my_pkg.my_mixers,other.mod`` in the environment;
- an installed distribution that declares the entry point group ``mixer_sandbox.mixers``::

      [project.entry-points."mixer_sandbox.mixers"]
      my_mixers = "my_pkg.my_mixers"

A plugin module registers with the public decorator::

      from sandbox import register_mixer

      @register_mixer("my_mixer", paper="me, 2026", family="conv", complexity="O(N)")
      class MyMixer(nn.Module): ...
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

from .errors import SandboxError

ENTRY_POINT_GROUP = "mixer_sandbox.mixers"
ENV_VAR = "SANDBOX_PLUGINS"

_loaded: dict[str, object] = {}  # plugin name -> module, so a plugin is imported once per process


def _split(names: Iterable[str] | str | None) -> list[str]:
    if not names:
        return []
    if isinstance(names, str):
        names = [names]
    out = []
    for item in names:  # commas, or the platform's PATH separator
        out += [part.strip() for part in re.split(f"[,{re.escape(os.pathsep)}]", item)]
    return [n for n in out if n]


def import_plugin(name: str):
    """Import one plugin by dotted module name or ``.py`` path; errors become one-line :class:`SandboxError`."""
    if name in _loaded:
        return _loaded[name]
    try:
        if name.endswith(".py") or os.sep in name:
            path = Path(name).expanduser().resolve()
            if not path.is_file():
                raise SandboxError(f"plugin file {name!r} does not exist")
            mod_name = f"sandbox_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)  # `--plugin my_pkg.mod` from a script run elsewhere
            module = importlib.import_module(name)
    except SandboxError:
        raise
    except ModuleNotFoundError as e:
        raise SandboxError(
            f"cannot import plugin {name!r}: {e}; give a dotted module importable from the working directory "
            f"or PYTHONPATH, or a path to a .py file"
        ) from None
    except Exception as e:  # the plugin's own code failed
        raise SandboxError(f"plugin {name!r} failed to import: {type(e).__name__}: {e}") from e
    _loaded[name] = module
    return module


def load_plugins(names: Iterable[str] | str | None = None, env: bool = True, entry_points: bool = True) -> list[str]:
    """Import plugins from ``names``, the ``SANDBOX_PLUGINS`` variable and the ``mixer_sandbox.mixers`` entry points.

    Returns the names of the plugins imported by this call or earlier. Safe to call repeatedly.
    """
    # Built-in registrations first, so a plugin that reuses a built-in key gets the duplicate-key error.
    import operators  # noqa: F401

    wanted = _split(names)
    if env:
        wanted += _split(os.environ.get(ENV_VAR, ""))
    for name in wanted:
        import_plugin(name)
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            key = f"entry-point:{ep.name}={ep.value}"
            if key in _loaded:
                continue
            try:
                _loaded[key] = ep.load()
            except Exception as e:
                raise SandboxError(
                    f"plugin entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP!r} failed to load: "
                    f"{type(e).__name__}: {e}"
                ) from e
    return list(_loaded)


def plugin_path(name: str) -> str:
    """A plugin given as a .py path, made absolute (the runs and --resume may start elsewhere)."""
    if name.endswith(".py") or "/" in name or "\\" in name:
        return str(Path(name).expanduser().resolve())
    return name
