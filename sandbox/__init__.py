"""mixer-sandbox: token mixers for low-level vision as plug-in operators in one registry.

Public API::

    from sandbox import build_mixer, list_mixers, mixer_info, register_mixer, load_plugins
"""

from .errors import OptionError, SandboxError, UnknownNameError
from .plugins import load_plugins
from .registry import MIXERS, Registry, build_mixer, list_mixers, mixer_info, parse_spec, register_mixer
from .utils import resolve_device

__version__ = "0.1.0"

__all__ = [
    "MIXERS",
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
]
