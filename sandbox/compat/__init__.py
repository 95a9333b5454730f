"""Interoperability with other frameworks (BasicSR). Nothing here is imported by the core."""

from __future__ import annotations

import sys
import types

__all__ = ["install_torchvision_shim"]


def install_torchvision_shim() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable again (removed in torchvision 0.17).

    basicsr 1.4.2, the latest release, imports ``rgb_to_grayscale`` from it (BasicSR issue #649, fixed on master by
    PR #650 but never released). The function still lives in ``torchvision.transforms.functional``; this registers a
    tiny module under the old name that re-exports it. Harmless when the old module exists.
    """
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)

        return
    except ImportError:
        pass
    import torchvision.transforms.functional as F

    shim = types.ModuleType(name)
    shim.__doc__ = "mixer-sandbox shim: torchvision >= 0.17 removed this module (BasicSR issue #649)"
    shim.rgb_to_grayscale = F.rgb_to_grayscale
    sys.modules[name] = shim
