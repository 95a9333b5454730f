"""Layers shared by the network families."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from sandbox.errors import OptionError, SandboxError
from sandbox.registry import stage_shared_modules

__all__ = ["DropPath", "block_specs", "share_across_stage"]


def block_specs(
    value: Any, depths: Sequence[int], option: str, unit: str, unit_long: str, first: int = 0
) -> list[list[Any]]:
    """The mixer spec of every block, ``[unit][block]``, from one spec (name, ``'name:k=v,...'`` or dict), one spec
    per unit (a stage or residual group), or per unit a list of one spec per block.

    Args:
        value: the network's mixer option.
        depths: blocks per unit.
        option: the option's name in messages ("mixer", "mixers").
        unit: short unit name in messages ("group", "stage"); ``unit_long`` the long one ("residual group").
        first: number of the first unit in messages (0 or 1).
    """
    n = len(depths)
    if isinstance(value, (str, dict)):
        per_unit = [value] * n
    elif isinstance(value, (list, tuple)) and len(value) == n:
        per_unit = list(value)
    else:
        raise OptionError(
            f"{option}={value!r} is not valid; expected one spec (name, 'name:k=v,...' or dict), or a list of {n} "
            f"(one per {unit_long}, each a spec or a list of one spec per block)"
        )
    specs = []
    for i, (spec, depth) in enumerate(zip(per_unit, depths)):
        if isinstance(spec, (list, tuple)):
            if len(spec) != depth:
                raise OptionError(
                    f"mixer list of {unit} {i + first} has {len(spec)} specs; the {unit} has {depth} blocks"
                )
            specs.append(list(spec))
        else:
            specs.append([spec] * depth)
    return specs


def share_across_stage(stage: nn.Module, blocks: Sequence[nn.Module], size: int) -> None:
    """Register on ``stage`` the modules the mixers in its ``blocks`` share (the mixers' ``share_across_stage``
    hooks, see ``sandbox.registry.register_mixer``), each under the key its hook gives (hco: ``freq_embed``)."""
    for key, module in stage_shared_modules(blocks, size).items():
        if hasattr(stage, key):
            raise SandboxError(f"stage-shared key {key!r} clashes with {type(stage).__name__}.{key}; pick another key")
        setattr(stage, key, module)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` during training, rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)  # (B, 1, 1, 1)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
