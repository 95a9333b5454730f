"""BasicSR interop: ``import sandbox.compat.basicsr`` makes basicsr 1.4.2 importable and registers our networks.

After the import, a BasicSR options file can name our restoration networks in ``network_g``::

    network_g:
      type: VHeatIR          # or SandboxIR (any mixer: `mixer: hco`), SandboxSwinIR
      preset: small
      in_chans: 3

The builders take our keyword options (``preset``, ``task``, ``in_chans``, ``embed_dim``, ``depths``, ``mixer``,
...). BasicSR-style SwinIR keys are accepted where they mean the same thing: ``img_size`` is ignored (our networks
run at any size), ``upscale`` must be 1 and ``upsampler`` empty (restoration, no super-resolution), ``num_heads`` (one
value per group, all equal) goes to the window-attention mixers, and ``num_in_ch``/``num_out_ch`` map to ``in_chans``.
"""

from __future__ import annotations

from typing import Any

from ..errors import OptionError
from . import install_torchvision_shim

install_torchvision_shim()

import basicsr  # noqa: E402,F401  (after the shim)
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402

__all__ = ["SandboxIR", "SandboxSwinIR", "VHeatIR", "ARCH_REGISTRY"]


def _translate(opts: dict[str, Any]) -> dict[str, Any]:
    opts = dict(opts)
    opts.pop("img_size", None)
    if opts.pop("upscale", 1) != 1:
        raise OptionError("upscale must be 1: the sandbox restoration networks do not upsample")
    if opts.pop("upsampler", "") not in ("", None):
        raise OptionError("upsampler must be '' : the sandbox restoration networks do not upsample")
    for key in ("num_in_ch", "num_out_ch"):
        if key in opts:
            opts["in_chans"] = opts.pop(key)
    if "num_heads" in opts:
        heads = opts.pop("num_heads")
        heads = set(heads) if isinstance(heads, (list, tuple)) else {heads}
        if len(heads) != 1:
            raise OptionError(f"num_heads={sorted(heads)} differ per group; give one value (or a mixer spec per group)")
        opts["num_heads"] = heads.pop()
    return opts


def _build(name: str, opts: dict[str, Any]):
    from ..registry import build_arch

    return build_arch({"name": name, **_translate(opts)})


def SandboxSwinIR(**opts: Any):
    """Our ``swinir`` (state_dict-compatible with SwinIR) built from BasicSR options."""
    return _build("swinir", opts)


def VHeatIR(**opts: Any):
    """Our ``vheatir`` (SwinIR topology with HCO, frequency embeddings shared per residual group)."""
    return _build("vheatir", opts)


def SandboxIR(**opts: Any):
    """Our ``ir`` (SwinIR topology with any registered mixer: ``mixer: name`` or ``mixer: {name: ..., ...}``)."""
    return _build("ir", opts)


for _fn in (SandboxSwinIR, VHeatIR, SandboxIR):
    if _fn.__name__ not in ARCH_REGISTRY:
        ARCH_REGISTRY.register(_fn)
