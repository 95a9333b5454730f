"""Identity mixer: no token mixing at all (IdentityFormer baseline)."""

from __future__ import annotations

from torch import Tensor, nn

from sandbox.registry import register_mixer


@register_mixer(
    "identity",
    paper="Yu et al., MetaFormer Baselines for Vision (IdentityFormer), TPAMI 2024",
    family="identity",
    complexity="O(1)",
)
class IdentityMixer(nn.Module):
    """Identity token mixer: returns its input. Maps (B, C, H, W) -> (B, C, H, W), any size.

    Args:
        dim: channels C (unused; part of the contract).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x
