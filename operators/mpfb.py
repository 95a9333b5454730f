"""FVNet's multi-phase fusion block (MPFB): parallel FTFUs at different time scales, fused per channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import check_choice, check_int
from sandbox.registry import register_mixer

from ._common import linear_cf
from .ftfu import FTFU

FUSIONS = ("average", "concat", "se", "attention")


def time_scales(phases: int) -> list[float]:
    """Per-phase tau multipliers s_n = 2 ** (n - (N - 1) / 2): geometric, centred on 1 ({0.5, 1, 2} for N = 3)."""
    return [2.0 ** (n - (phases - 1) / 2) for n in range(phases)]


@register_mixer(
    "mpfb",
    paper="FVNet (AAAI 2026): multi-phase fusion block of FTFUs; no official code",
    family="liquid",
    complexity="O(N k^2)",
)
class MPFBMixer(nn.Module):
    """N parallel FTFU phases at time scales s_n, fused, then an output projection. (B, C, H, W) -> (B, C, H, W).

    Any size; batch items independent. Phase n is a full :class:`operators.ftfu.FTFU` (its own depthwise conv, gate
    G, beta and A) with ``time_scale = s_n`` from :func:`time_scales`; its output is y_n (B, C, H, W). Fusion, with
    gap = GAP(X) (B, C) and a bottleneck MLP  h = Linear(d, N C)(ReLU(Linear(C, d)(gap))), d = max(C // 4, 8):

    - ``"average"``: Y = mean_n y_n. No parameters.
    - ``"concat"``: Y = Conv1x1(NC -> C, bias)(concat_n y_n) (phase-major channel order).
    - ``"se"``: Y = sum_n sigmoid(h)_n * y_n, per-phase per-channel gates, not normalised over n.
    - ``"attention"`` (paper): Y = sum_n softmax_n(h)_n * y_n, SK-Net-style selection over phases per channel.
      With one phase the softmax is identically 1, so no fusion parameters are created (they would get no gradient).

    ``proj`` is an ``nn.Linear(C, C)`` applied channels-first as a 1 x 1 conv (as in the ``ftfu`` mixer).

    Args:
        dim: channels C.
        phases: number N >= 1 of parallel FTFUs (unknown in the paper; 3 is the reference's starting point).
        fusion: "average", "concat", "se" or "attention".
        kernel_size: odd depthwise kernel size of each phase's local feature.
        activation: act of each phase's f = beta * act(F): "tanh" (paper), "sigmoid", "relu" or "linear".
    """

    def __init__(
        self,
        dim: int,
        phases: int = 3,
        fusion: str = "attention",
        kernel_size: int = 3,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        check_int("phases", phases, 1, hint=" (e.g. 1, 2, 3, 4)")
        check_choice("fusion", fusion, FUSIONS)
        self.dim, self.num_phases, self.fusion = dim, phases, fusion
        self.units = nn.ModuleList(
            FTFU(dim, kernel_size=kernel_size, activation=activation, time_scale=s) for s in time_scales(phases)
        )
        self.fuse: nn.Module | None = None
        self.fc1: nn.Linear | None = None
        self.fc2: nn.Linear | None = None
        if fusion == "concat":
            self.fuse = nn.Conv2d(phases * dim, dim, 1)
        elif fusion == "se" or (fusion == "attention" and phases > 1):
            hidden = max(dim // 4, 8)
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, phases * dim)
        self.proj = nn.Linear(dim, dim)

    def _weights(self, x: Tensor) -> Tensor:
        """Per-phase per-channel fusion weights (B, N, C, 1, 1) from GAP(X)."""
        b, c = x.shape[:2]
        gap = x.mean(dim=(2, 3))  # (B, C)
        logits = self.fc2(F.relu(self.fc1(gap))).view(b, self.num_phases, c)  # (B, N, C)
        w = torch.sigmoid(logits) if self.fusion == "se" else torch.softmax(logits, dim=1)
        return w[:, :, :, None, None]  # (B, N, C, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        ys = [unit(x) for unit in self.units]  # N x (B, C, H, W)
        if self.fusion == "concat":
            y = self.fuse(torch.cat(ys, dim=1))  # (B, NC, H, W) -> (B, C, H, W)
        elif self.fusion == "average" or self.fc1 is None:
            y = torch.stack(ys, dim=1).mean(dim=1)  # (B, N, C, H, W) -> (B, C, H, W)
        else:
            w = self._weights(x)  # (B, N, C, 1, 1)
            y = (w * torch.stack(ys, dim=1)).sum(dim=1)  # (B, C, H, W)
        return linear_cf(y, self.proj)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, phases={self.num_phases}, fusion={self.fusion!r}"
