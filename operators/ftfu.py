"""FVNet's fluid temporal flow unit (FTFU): a closed-form liquid-time-constant update of every pixel.

The paper (FVNet, AAAI 2026; no official code) gives, per sample b, channel c and pixel p::

    tau   = G(GAP(X))                      per sample and channel, tau > 0
    f     = beta * act(F),  F = local feature of X (depthwise conv)
    alpha = tau + f
    Y     = X * exp(-alpha * tau) + f * A / alpha * (1 - exp(-alpha * tau))

which is the exact solution at time t = tau of the liquid-time-constant ODE with constant coefficients::

    dy/dt = -(tau + f) * y + f * A,   y(0) = X.

``tau`` is both the leak rate and the integration time. The formula divides by alpha, which the unit cannot keep away
from zero (f is in (-|beta|, |beta|)). It is therefore evaluated in the equivalent stable form (z = alpha * tau)::

    Y = X * exp(-z) + f * A * tau * phi1(z),   phi1(z) = (1 - exp(-z)) / z = -expm1(-z) / z,

with the series phi1(z) = 1 - z/2 + z^2/6 - ... for |z| < ``PHI1_SERIES_BELOW``. Nothing divides by alpha, and
alpha = 0 is exact (Y = X + f * A * tau, the ODE with zero leak). z is clamped from below at ``Z_MIN`` so that
exp(-z) stays finite for alpha < 0. See :func:`phi1` and :func:`ftfu_dynamics`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import check_choice, check_positive
from sandbox.registry import register_mixer

from ._common import DepthwiseConv2d, fp32, linear_cf
from .conv import check_odd_kernel

ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")

# phi1(z) = sum_k (-z)^k / (k + 1)! uses its Taylor series 1 - z/2 + z^2/6 - ... (through z^6) for |z| below this.
# The switch sits this high because autograd's derivative of -expm1(-z)/z cancels catastrophically for small z (its
# error is about eps/|z|: 1e-2 relative at |z| = 1e-5 in fp32); at |z| >= 1e-2 the closed form's value and gradient
# are accurate to ~1e-5 in fp32 and ~1e-14 in fp64. The truncation error of the series, |z|^7 / 8!, is < 3e-19 here.
PHI1_SERIES_BELOW = 1e-2
_PHI1_COEFFS = tuple(1.0 / math.factorial(k + 1) for k in range(7))  # 1/(k+1)!, k = 0..6

# Lower clamp on z = alpha * tau. For alpha < 0 the ODE grows like exp(|z|); below Z_MIN the unit would amplify its
# input more than e^10 ~ 2.2e4-fold, i.e. the configuration is already diverging. Clamping keeps exp(-z) <= e^10 and
# phi1(z) <= (e^10 - 1) / 10 ~ 2.2e3 (fp32 overflows only at e^88), so outputs and gradients stay finite. Below the
# clamp the result is the ODE solution at z = Z_MIN, and z receives no gradient (X, f, A and tau still do, through
# the other factors).
Z_MIN = -10.0


def phi1(z: Tensor) -> Tensor:
    """phi1(z) = (1 - exp(-z)) / z, with phi1(0) = 1, finite value and gradient for every finite z.

    Both branches are computed on a "safe" z (the closed form never sees |z| < ``PHI1_SERIES_BELOW``, the series never
    sees large |z|), so the branch that ``torch.where`` discards has no inf or NaN to leak into the gradient.
    """
    small = z.abs() < PHI1_SERIES_BELOW
    z_closed = torch.where(small, torch.ones_like(z), z)
    z_series = torch.where(small, z, torch.zeros_like(z))
    closed = -torch.expm1(-z_closed) / z_closed
    series = torch.full_like(z, _PHI1_COEFFS[-1])
    for c in reversed(_PHI1_COEFFS[:-1]):  # Horner in w = -z: c_0 + w (c_1 + w (c_2 + ...))
        series = c - z_series * series
    return torch.where(small, series, closed)


def ftfu_dynamics(x: Tensor, f: Tensor, tau: Tensor, A: Tensor) -> Tensor:
    """Closed-form FTFU update: y(tau) of dy/dt = -(tau + f) y + f A, y(0) = x, with z = (tau + f) tau >= ``Z_MIN``.

    All arguments broadcast against each other (in the unit: x, f (B, C, H, W); tau (B, C, 1, 1); A (1, C, 1, 1)).
    Computes in the dtype it is given; call it on fp32 (or fp64) tensors.
    """
    alpha = tau + f
    z = (alpha * tau).clamp_min(Z_MIN)
    return x * torch.exp(-z) + f * A * tau * phi1(z)


def _upcast(t: Tensor) -> Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 pass through (so a ``.double()`` unit stays in float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _activation(name: str, t: Tensor) -> Tensor:
    if name == "tanh":
        return torch.tanh(t)
    if name == "sigmoid":
        return torch.sigmoid(t)
    if name == "relu":
        return F.relu(t)
    return t  # "linear"


class FTFU(nn.Module):
    """Fluid temporal flow unit. Maps (B, C, H, W) -> (B, C, H, W), any size; batch items independent.

    Parametrisation (the paper leaves these open; choices follow the operators reference, section 3.2):

    - F = depthwise ``kernel_size`` x ``kernel_size`` conv of X with bias (zero padding); its weight and bias play the
      paper's gamma and delta. f = beta * act(F) with per-channel ``beta`` (init 1).
    - tau = time_scale * (softplus(G(GAP(X))) + tau_min), G = Linear(C, C). GAP is the per-sample spatial mean.
      G's weight starts at N(0, 0.02) and its bias at log(e - 1), so softplus ~ 1 and tau ~ time_scale at init.
    - A: per-channel reversal potential (init 1).
    - The update is :func:`ftfu_dynamics` (stable form, no division by alpha, z clamped at ``Z_MIN``), computed in
      fp32 (fp64 if the unit is fp64) with autocast off; the result is cast back to the input dtype. Only the
      depthwise conv runs in reduced precision under autocast.

    Args:
        dim: channels C.
        kernel_size: odd size k of the depthwise conv producing F.
        activation: act in f = beta * act(F): "tanh" (paper), "sigmoid", "relu" or "linear" (identity).
        time_scale: multiplier s > 0 on tau (leak rate and integration time both); MPFB's phases use s_n.
        tau_min: floor tau_min > 0 added after the softplus (before ``time_scale``).
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        activation: str = "tanh",
        time_scale: float = 1.0,
        tau_min: float = 1e-3,
    ) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        check_choice("activation", activation, ACTIVATIONS)
        check_positive("time_scale", time_scale)
        check_positive("tau_min", tau_min)
        self.dim, self.activation = dim, activation
        self.time_scale, self.tau_min = float(time_scale), float(tau_min)
        self.dwconv = DepthwiseConv2d(dim, kernel_size)
        self.gate = nn.Linear(dim, dim)  # G: GAP(X) -> pre-softplus tau
        self.beta = nn.Parameter(torch.ones(dim))
        self.A = nn.Parameter(torch.ones(dim))
        nn.init.trunc_normal_(self.gate.weight, std=0.02)
        nn.init.constant_(self.gate.bias, math.log(math.e - 1.0))  # softplus(bias) = 1

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(f, tau) of input x: f (B, C, H, W) and tau (B, C, 1, 1), both in fp32 (fp64 for a fp64 unit)."""
        feat = self.dwconv(x)  # (B, C, H, W); may be bf16 under autocast
        with fp32(x):
            gap = _upcast(x).mean(dim=(2, 3))  # (B, C)
            w, b = _upcast(self.gate.weight), _upcast(self.gate.bias)
            tau = F.softplus(F.linear(gap, w, b)) + self.tau_min  # (B, C)
            tau = (self.time_scale * tau)[:, :, None, None]  # (B, C, 1, 1)
            f = _upcast(self.beta)[:, None, None] * _activation(self.activation, _upcast(feat))  # (B, C, H, W)
        return f, tau

    def forward(self, x: Tensor) -> Tensor:
        f, tau = self.coefficients(x)
        with fp32(x):
            y = ftfu_dynamics(_upcast(x), f, tau, _upcast(self.A)[:, None, None])  # (B, C, H, W)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, activation={self.activation!r}, time_scale={self.time_scale}, tau_min={self.tau_min}"


@register_mixer(
    "ftfu",
    paper="FVNet (AAAI 2026): fluid temporal flow unit; no official code",
    family="liquid",
    complexity="O(N k^2)",
)
class FTFUMixer(nn.Module):
    """FTFU followed by an output projection. Maps (B, C, H, W) -> (B, C, H, W), any size.

    Layout: channels-first throughout. ``unit`` is an :class:`FTFU` (depthwise conv, GAP gate and the closed-form
    update, fp32 under autocast); ``proj`` is an ``nn.Linear(C, C)`` applied to the channels of the (B, C, H, W)
    result as a 1 x 1 convolution (:func:`operators._common.linear_cf`), so its weights have the channels-last
    ``nn.Linear`` shape.

    Args:
        dim: channels C.
        kernel_size: odd depthwise kernel size k of the local feature F (3 in the paper).
        activation: act in f = beta * act(F): "tanh" (paper), "sigmoid", "relu" or "linear".
    """

    def __init__(self, dim: int, kernel_size: int = 3, activation: str = "tanh") -> None:
        super().__init__()
        self.unit = FTFU(dim, kernel_size=kernel_size, activation=activation)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.unit(x)  # (B, C, H, W)
        return linear_cf(y, self.proj)  # (B, C, H, W)
