"""Pieces shared by several operators: size caches, fp32 regions, channels-first norms and activations."""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

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


_F = TypeVar("_F", bound=Callable)


def compiler_disable(fn: _F) -> _F:
    """``torch.compiler.disable(fn)``, applied at the first call instead of at import.

    ``torch.compiler.disable`` imports ``torch._dynamo`` (most of a second, more than the rest of ``operators``), so
    as a decorator it would slow down every ``import operators``, ``python -m sandbox mixers`` included. Under
    ``torch.compile`` the result behaves the same: the graph breaks at the call and ``fn`` runs eagerly.
    """
    disabled: dict[str, Callable] = {}  # the disabled function, made once

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if "fn" not in disabled:
            disabled["fn"] = torch.compiler.disable(fn)
        return disabled["fn"](*args, **kwargs)

    return call  # type: ignore[return-value]


def fp32(x: Tensor) -> torch.autocast:
    """Context manager that turns autocast off on ``x``'s device; pair it with ``x.float()`` for DCT, FFT and exp."""
    device_type = x.device.type if x.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    return torch.autocast(device_type=device_type, enabled=False)


def _channel_mean(weights: Tensor, x: Tensor) -> Tensor:
    """sum_c weights[c] * x[:, c] as (B, 1, H*W) for x (B, C, H*W): a batched GEMV, several times faster on CPU than
    a reduction over the strided channel dim (``x.mean(1)``; ``torch.var_mean`` there is slower still)."""
    return torch.bmm(weights.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1), x)


def ln_cf_forward(
    flat: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    inplace: bool = False,
    out: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """LayerNorm over dim 1 of an fp32 (B, C, N) tensor, the forward of :class:`_LayerNormCF`, without autograd.

    Returns (y, xhat, rstd): the output (B, C, N), the normalised input (B, C, N) and 1 / std (B, 1, N), the last two
    being what :func:`ln_cf_backward` needs. The channel statistics are batched GEMVs (:func:`_channel_mean`).

    Fresh CPU tensors cost page faults (about as much as the arithmetic at these sizes), so the two full-size
    buffers can be supplied: ``inplace=True`` centres ``flat`` in its own memory (xhat then *is* ``flat``), and
    ``out`` (B, C, N) holds the squares for the variance, then y.
    """
    c = flat.shape[1]
    avg = flat.new_full((c,), 1.0 / c)
    mean = _channel_mean(avg, flat)  # (B, 1, N)
    centred = flat.sub_(mean) if inplace else flat - mean  # (B, C, N)
    sq = torch.mul(centred, centred, out=out) if out is not None else centred.square()
    rstd = _channel_mean(avg, sq).add_(eps).rsqrt_()  # (B, 1, N)
    xhat = centred.mul_(rstd)  # (B, C, N), zero mean and unit variance over C
    dst = sq if out is not None else None  # the squares are dead: y goes there
    if weight is not None and bias is not None:
        y = torch.addcmul(bias.to(xhat.dtype)[:, None], xhat, weight.to(xhat.dtype)[:, None], out=dst)
    elif weight is not None:
        y = torch.mul(xhat, weight.to(xhat.dtype)[:, None], out=dst)
    elif bias is not None:
        y = torch.add(xhat, bias.to(xhat.dtype)[:, None], out=dst)
    else:
        y = xhat.clone() if dst is None else dst.copy_(xhat)
    return y, xhat, rstd


def ln_cf_backward(
    g: Tensor,
    xhat: Tensor,
    rstd: Tensor,
    weight: Tensor | None,
    need_weight: bool,
    need_bias: bool,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Backward of :func:`ln_cf_forward` for dL/dy ``g`` (B, C, N), fp32: returns (grad_x, grad_weight, grad_bias).

    dL/dx = rstd * (g_hat - mean_C(g_hat) - xhat * mean_C(g_hat * xhat)) with g_hat = weight * g; the two channel
    means are batched GEMVs and g_hat - mean_C(g_hat) is one ``addcmul``. One full-size buffer serves first for
    g * xhat, then for dL/dx: ``out`` (B, C, N) when given (it must not be ``g`` or ``xhat``), else a fresh one.
    ``g`` is read only. The parameter gradients are (C,) fp32, or None where not needed (or the parameter is None).
    """
    c = g.shape[1]
    w_avg = weight.to(g.dtype) / c if weight is not None else g.new_full((c,), 1.0 / c)
    g_x = torch.mul(g, xhat, out=out) if out is not None else g * xhat  # (B, C, N)
    grad_w = g_x.sum((0, 2)) if weight is not None and need_weight else None
    m2 = _channel_mean(w_avg, g_x)  # (B, 1, N): mean_C(g_hat * xhat); g_x is dead from here
    m1 = _channel_mean(w_avg, g).neg_()  # (B, 1, N): -mean_C(g_hat)
    if weight is not None:
        grad_x = torch.addcmul(m1, g, weight.to(g.dtype)[:, None], out=g_x)  # g_hat - mean_C(g_hat)
    else:
        grad_x = torch.add(g, m1, out=g_x)
    grad_x = grad_x.addcmul_(xhat, m2, value=-1.0).mul_(rstd)  # (B, C, N)
    grad_b = g.sum((0, 2)) if need_bias else None
    return grad_x, grad_w, grad_b


class _LayerNormCF(torch.autograd.Function):
    """LayerNorm over dim 1 of (B, C, H, W) with a hand-written backward (:func:`ln_cf_forward`,
    :func:`ln_cf_backward`).

    Autograd through the composite (mean, sub, pow, mean, rsqrt, mul, mul, add) keeps several full-size temporaries
    and makes about twice as many passes over memory, and the channel reductions are slow strided reductions; here
    they are batched GEMVs. Statistics and arithmetic run in fp32 for bf16/fp16 inputs; the output keeps the input's
    dtype. :func:`layer_norm_cf` uses it on CPU only.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        with fp32(x):  # autocast would run the GEMV statistics in bf16
            b, c, h, w = x.shape
            flat = x.reshape(b, c, h * w)  # (B, C, HW)
            flat = flat.float() if x.dtype in (torch.float16, torch.bfloat16) else flat
            y, xhat, rstd = ln_cf_forward(flat, weight, bias, eps)
            ctx.save_for_backward(xhat, rstd, weight)
            ctx.bias_dtype = bias.dtype if bias is not None else None
            return y.to(x.dtype).view(b, c, h, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        with fp32(grad):
            xhat, rstd, weight = ctx.saved_tensors  # (B, C, HW), (B, 1, HW), (C,)
            b, c, h, w = grad.shape
            g = grad.reshape(b, c, h * w).to(xhat.dtype)  # dL/dy
            need_b = ctx.bias_dtype is not None and ctx.needs_input_grad[2]
            grad_x, grad_w, grad_b = ln_cf_backward(g, xhat, rstd, weight, ctx.needs_input_grad[1], need_b)
            grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
            grad_b = grad_b.to(ctx.bias_dtype) if grad_b is not None else None
            return grad_x.to(grad.dtype).view(b, c, h, w), grad_w, grad_b, None


class _DepthwiseConv2d(torch.autograd.Function):
    """Depthwise conv2d (groups = channels, stride 1, dilation 1, zero padding) with a hand-written backward.

    On CPU, PyTorch's backward of a depthwise convolution with a 5 x 5 or 7 x 7 kernel (``convolution_backward``)
    takes many times as long as its forward at batch 1 (docs/common_layers.md). Here both gradients are
    convolutions:

    - grad_x = ``conv_transpose2d(g, w)``, the adjoint of the forward;
    - grad_w[c] = sum_b xpad[b, c] (cross-correlated with) g[b, c]: one grouped ``conv2d`` with the B C (image,
      channel) planes as groups of one input channel each and g as their (H_out, W_out) kernels, whose (B, C, K_h,
      K_w) output is summed over the batch (in fp32 at least). With the C channels as groups and the B images as
      the input channels of each, oneDNN took 4 to 13 times as long at batch 4 and 8 (docs/common_layers.md).

    Autocast is honoured as by ``F.conv2d`` (``custom_fwd``/``custom_bwd``); the gradients keep the inputs' dtypes.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.bias_dtype = padding, bias.dtype if bias is not None else None
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])  # (B, C, H_out, W_out)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors  # (B, C, H, W), (C, 1, K_h, K_w)
        (b, c), (ph, pw) = x.shape[:2], ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv_transpose2d(grad, weight.to(grad.dtype), padding=ctx.padding, groups=c).to(x.dtype)
        if ctx.needs_input_grad[1]:
            xp = F.pad(x.to(grad.dtype), (pw, pw, ph, ph))  # (B, C, H + 2 ph, W + 2 pw)
            planes = xp.reshape(1, b * c, *xp.shape[-2:])  # (1, B C, ...): one group per (image, channel) plane
            kernels = grad.reshape(b * c, 1, *grad.shape[-2:])  # (B C, 1, H_out, W_out)
            per_image = F.conv2d(planes, kernels, groups=b * c)  # (1, B C, K_h, K_w)
            acc = torch.promote_types(per_image.dtype, torch.float32)  # bf16/fp16 partials summed in fp32
            grad_w = per_image.view(b, *weight.shape).sum(0, dtype=acc).to(weight.dtype)  # (C, 1, K_h, K_w)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3)).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, k, padding=k // 2, groups=C)``: the same module, parameters and state_dict keys, with the
    backward of :class:`_DepthwiseConv2d` on CPU for kernels larger than 3 x 3 whenever a gradient is needed (CUDA,
    inference and 3 x 3 kernels keep PyTorch's own path: its 3 x 3 backward is the faster one, the hand-written one
    wins for larger kernels at any batch; measurements in docs/common_layers.md).
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (
            max(self.kernel_size) > 3
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad)
        ):
            return _DepthwiseConv2d.apply(x, weight, bias, self.padding)
        return super()._conv_forward(x, weight, bias)


def layer_norm_cf(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm over the channel dim of a (B, C, H, W) tensor (as ConvNeXt's LayerNorm2d); output in ``x.dtype``.

    On CPU it is the hand-written autograd node :class:`_LayerNormCF` (channel statistics as batched GEMVs, no
    permute). On every other device (CUDA, MPS, ...) it is :func:`layer_norm_cf_plain`: PyTorch's own kernel, fused
    on CUDA, which the CPU node is not meant to replace.
    """
    if x.device.type == "cpu":
        return _LayerNormCF.apply(x, weight, bias, eps)
    return layer_norm_cf_plain(x, weight, bias, eps)


def layer_norm_cf_plain(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``F.layer_norm`` over C on a channels-last view of (B, C, H, W): the path :func:`layer_norm_cf` takes off CPU.

    Same contract as the CPU node: the output keeps ``x``'s dtype and memory format, and autocast does not move it to
    fp32 (the kernel accumulates its statistics in fp32 for bf16/fp16 inputs itself; the parameters are cast to
    ``x``'s dtype, their gradients flow back through the cast).
    """
    with fp32(x):  # autocast runs layer_norm in fp32 and returns fp32; the CPU node keeps x's dtype
        w = weight.to(x.dtype) if weight is not None else None
        b = bias.to(x.dtype) if bias is not None else None
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, eps)  # (B, H, W, C)
    y = y.permute(0, 3, 1, 2)  # (B, C, H, W) with channels-last strides
    return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


class LayerNormCF(nn.LayerNorm):
    """``nn.LayerNorm(C)`` applied to (B, C, H, W) over C; same parameters and state_dict keys as ``nn.LayerNorm``.

    :func:`layer_norm_cf`: the hand-written autograd node on CPU, PyTorch's kernel on other devices.
    """

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_cf(x, self.weight, self.bias, self.eps)


def linear_cf(x: Tensor, layer: nn.Linear) -> Tensor:
    """Apply an ``nn.Linear(C_in, C_out)`` to the channels of (B, C_in, H, W) -> (B, C_out, H, W).

    Keeping the layer an ``nn.Linear`` keeps state_dict keys and shapes identical to the official channels-last code.
    One batched GEMM over the flattened pixels: on CPU a 1 x 1 ``conv2d`` takes the slower im2col path
    (docs/common_layers.md).
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
