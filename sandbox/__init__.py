"""mixer-sandbox: token mixers for low-level vision as plug-in operators in one registry.

Public API::

    from sandbox import build_mixer, list_mixers, mixer_info, register_mixer, load_plugins
    from sandbox import build_arch, list_archs, register_arch, load_checkpoint, count_params, count_macs
    from sandbox import build_task, list_tasks, register_task
    from sandbox import enable_huge_pages  # entry scripts: first thing in main, before any tensor exists

Importing the package changes no process-wide setting: the CPU allocator's huge pages are turned on by the entry
scripts that call :func:`enable_huge_pages` (see ``sandbox/_alloc.py``).
"""

from ._alloc import enable_huge_pages
from .checkpoint import load_checkpoint, save_atomic
from .complexity import count_macs, count_params
from .errors import OptionError, SandboxError, UnknownNameError
from .plugins import load_plugins
from .registry import (
    ARCHS,
    MIXERS,
    TASKS,
    Registry,
    build_arch,
    build_mixer,
    build_task,
    list_archs,
    list_mixers,
    list_tasks,
    mixer_info,
    parse_spec,
    register_arch,
    register_mixer,
    register_task,
)
from .utils import resolve_device

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "MIXERS",
    "build_arch",
    "count_macs",
    "count_params",
    "enable_huge_pages",
    "list_archs",
    "load_checkpoint",
    "register_arch",
    "save_atomic",
    "OptionError",
    "Registry",
    "SandboxError",
    "UnknownNameError",
    "build_mixer",
    "list_mixers",
    "load_plugins",
    "mixer_info",
    "parse_spec",
    "register_mixer",
    "resolve_device",
    "TASKS",
    "build_task",
    "list_tasks",
    "register_task",
]
