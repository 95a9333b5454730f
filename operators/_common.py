"""Pieces shared by several operators: size caches, fp32 regions, channels-first norms and activations."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SizeCache:
    """A small LRU cache for tensors derived from the input size (DCT bases, decay maps, masks, distance maps).

    Keys should include everything the tensor depends on, typically ``(name, H, W, device, dtype)``. The cache is a
    plain attribute, not a buffer, so it never reaches the ``state_dict`` and is rebuilt on a new device or dtype.
    Cached tensors are created under ``torch.no_grad()`` and must not depend on parameters.
    """

    def __init__(self, maxsize: int = 16) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Tensor] = OrderedDict()

    def get(self, key: Hashable, factory: Callable[[], Tensor]) -> Tensor:
        hit = self._data.get(key)
        if hit is not None:
            self._data.move_to_end(key)
            return hit
        with torch.no_grad():
            value = factory()
        self._data[key] = value
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __deepcopy__(self, memo) -> "SizeCache":  # copies (EMA, sweeps) start empty rather than duplicating tensors
        return SizeCache(self.maxsize)

    def __getstate__(self):  # pickling a module (DataParallel, torch.save of a whole module) drops the cache
        return {"maxsize": self.maxsize}

    def __setstate__(self, state) -> None:
        self.__init__(state["maxsize"])


class InferenceCache:
    """Tensors computed from a module's parameters and the input size only (e.g. a Hyena kernel), reused in inference.

    ``get(module, key, factory)`` calls ``factory()`` while the module trains or gradients are on, so autograd sees
    the parameters. In inference (eval mode and no gradients) it keeps the result per ``key`` (include the size and
    device) and drops everything as soon as a parameter of ``module`` changes: an optimizer step or
    ``load_state_dict`` (in-place, new version) or ``.to()`` (new storage). Like :class:`SizeCache` it is a plain
    attribute: never in the state_dict, empty in copies.
    """

    def __init__(self, maxsize: int = 4) -> None:
        self._cache = SizeCache(maxsize)
        self._state: tuple = ()

    def get(self, module: nn.Module, key: Hashable, factory: Callable[[], Tensor]) -> Tensor:
        if module.training or torch.is_grad_enabled():
            return factory()
        state = tuple((p.data_ptr(), p._version) for p in module.parameters())
        if state != self._state:
            self._cache.clear()
            self._state = state
        return self._cache.get(key, factory)

    def __len__(self) -> int:
        return len(self._cache)

    def __deepcopy__(self, memo) -> "InferenceCache":
        return InferenceCache(self._cache.maxsize)

    def __getstate__(self):
        return {"maxsize": self._cache.maxsize}

    def __setstate__(self, state) -> None:
        self.__init__(state["maxsize"])


def fp32(x: Tensor) -> torch.autocast:
    """Context manager that turns autocast off on ``x``'s device; pair it with ``x.float()`` for DCT, FFT and exp."""
    device_type = x.device.type if x.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    return torch.autocast(device_type=device_type, enabled=False)


def layer_norm_cf(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm over the channel dim of a (B, C, H, W) tensor, without permuting (as ConvNeXt's LayerNorm2d)."""
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight[:, None, None]
    if bias is not None:
        y = y + bias[:, None, None]
    return y


class LayerNormCF(nn.LayerNorm):
    """``nn.LayerNorm(C)`` applied to (B, C, H, W) over C; same parameters and state_dict keys as ``nn.LayerNorm``."""

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_cf(x, self.weight, self.bias, self.eps)


def linear_cf(x: Tensor, layer: nn.Linear) -> Tensor:
    """Apply an ``nn.Linear(C_in, C_out)`` to the channels of (B, C_in, H, W) -> (B, C_out, H, W).

    Keeping the layer an ``nn.Linear`` keeps state_dict keys and shapes identical to the official channels-last code.
    One batched GEMM over the flattened pixels: on CPU a 1 x 1 ``conv2d`` takes the slow im2col path (measured 1.3x
    slower at inference and 1.7x slower forward + backward at 256 x 256 x 48).
    """
    b, c, h, w = x.shape
    weight = layer.weight.expand(b, -1, -1)  # (B, C_out, C_in)
    flat = x.reshape(b, c, h * w)  # (B, C_in, H W)
    y = torch.bmm(weight, flat) if layer.bias is None else torch.baddbmm(layer.bias[:, None], weight, flat)
    return y.reshape(b, -1, h, w)  # (B, C_out, H, W)


class StarReLU(nn.Module):
    """StarReLU (MetaFormer): ``s * relu(x)**2 + b`` with learnable scalars; code defaults s = 1, b = 0."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.relu(x).pow(2) + self.bias
