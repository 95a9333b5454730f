"""The mixer contract as executable checks, run by the test suite over every registered mixer (plugins included).

Plugin authors can run the same checks from the command line::

    python -m sandbox check my_mixer --plugin my_pkg.my_mixers

Each check takes a mixer spec and raises ``AssertionError`` with the actual and expected values when the mixer
breaks the contract.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor

from .registry import MIXERS, build_mixer, parse_spec

DIM = 16
SIZES = ((2, DIM, 7, 9), (1, DIM, 33, 17), (1, DIM, 64, 64))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def sizes_for(spec, sizes=SIZES) -> list[tuple[int, int, int, int]]:
    """The contract's test sizes, rounded up to the mixer's declared ``size_multiple``."""
    m = int(MIXERS.entry(parse_spec(spec, "mixer")[0]).meta.get("size_multiple", 1))
    return [(b, c, _round_up(h, m), _round_up(w, m)) for b, c, h, w in sizes]


def _make(spec, device: str, seed: int = 0, dim: int = DIM) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_mixer(spec, dim).to(device).eval()


def _input(shape, device: str, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device)


def _close(a: Tensor, b: Tensor, rtol: float, atol: float) -> tuple[bool, float]:
    err = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    scale = b.float().abs().max().item() if b.numel() else 0.0
    return err <= atol + rtol * scale, err


def check_shapes(spec, device: str = "cpu") -> None:
    """(B, C, H, W) -> (B, C, H, W) with finite values at each contract size."""
    m = _make(spec, device)
    for shape in sizes_for(spec):
        with torch.no_grad():
            y = m(_input(shape, device))
        assert isinstance(y, Tensor), f"forward returned {type(y).__name__}, expected a Tensor"
        assert tuple(y.shape) == shape, f"input {shape} gave output {tuple(y.shape)}, expected {shape}"
        assert torch.isfinite(y).all(), f"non-finite output at input {shape}"


def check_gradients(spec, device: str = "cpu") -> None:
    """Every parameter receives a finite, non-zero gradient, and so does the input."""
    m = _make(spec, device).train()
    shape = sizes_for(spec)[0]
    x = _input(shape, device).requires_grad_(True)
    y = m(x)
    # a random projection, not .sum(): a sum cancels through normalisations and hides missing gradients
    w = _input(y.shape, device, seed=2)
    (y * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "input gradient missing or non-finite"
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"No gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        assert p.grad.abs().max() > 0, f"gradient of {name} is identically zero"


def check_batch_independent(spec, device: str = "cpu") -> None:
    """Item i of a batch gives the same output alone as with other items beside it."""
    m = _make(spec, device)
    _, c, h, w = sizes_for(spec)[0]
    x = _input((3, c, h, w), device)
    with torch.no_grad():
        y = m(x)
        x2 = x.clone()
        x2[0] = x2[0] * 5 + 3  # a very different neighbour must not change item 1
        y2 = m(x2)
        y1 = m(x[1:2])
    ok, err = _close(y2[1:], y[1:], rtol=1e-4, atol=1e-5)
    assert ok, f"changing batch item 0 changed items 1..2 by up to {err:.3g}"
    ok, err = _close(y1, y[1:2], rtol=1e-4, atol=1e-5)
    assert ok, f"item 1 alone differs from item 1 in a batch of 3 by {err:.3g}"


def check_state_dict(spec, device: str = "cpu") -> None:
    """The state_dict holds exactly the learned parameters and round-trips into a fresh instance."""
    m = _make(spec, device, seed=0)
    sd = m.state_dict()
    params = {n for n, _ in m.named_parameters()}
    extra = sorted(set(sd) - params)
    assert not extra, f"state_dict has entries that are not learned parameters (size-derived buffers?): {extra}"
    other = _make(spec, device, seed=123)
    other.load_state_dict(copy.deepcopy(sd), strict=True)
    shape = sizes_for(spec)[1]
    x = _input(shape, device)
    with torch.no_grad():
        ok, err = _close(other(x), m(x), rtol=0, atol=1e-6)
    assert ok, f"a fresh instance with the loaded state_dict differs by {err:.3g}"


def check_two_sizes(spec, device: str = "cpu") -> None:
    """One set of weights runs at two sizes, and the size caches do not leak between them."""
    m = _make(spec, device)
    (b, c, h, w), (_, _, h2, w2) = sizes_for(spec)[1], sizes_for(spec)[2]
    xa, xb = _input((b, c, h, w), device), _input((b, c, h2, w2), device, seed=3)
    with torch.no_grad():
        ya = m(xa)
        yb = m(xb)
        ya2 = m(xa)
    assert tuple(yb.shape) == (b, c, h2, w2), f"second size gave {tuple(yb.shape)}"
    ok, err = _close(ya2, ya, rtol=1e-5, atol=1e-6)
    assert ok, f"output at size {h}x{w} changed by {err:.3g} after running at {h2}x{w2} (stale cache?)"


def check_bf16_autocast(spec, device: str = "cpu") -> None:
    """Runs under bf16 autocast, finite, and close to the fp32 result (sensitive parts in fp32)."""
    m = _make(spec, device)
    shape = sizes_for(spec)[1]
    x = _input(shape, device)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            y = m(x)
    assert tuple(y.shape) == shape, f"bf16 output shape {tuple(y.shape)}, expected {shape}"
    assert torch.isfinite(y).all(), "non-finite output under bf16 autocast"
    rel = ((y.float() - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    assert rel < 0.05 or math.isclose(ref.norm().item(), 0.0), f"bf16 output is off by {rel:.3f} (relative L2)"


def check_deepcopy(spec, device: str = "cpu") -> None:
    """A deep copy (EMA, sweeps) gives the same output and shares no parameter storage."""
    m = _make(spec, device)
    x = _input(sizes_for(spec)[0], device)
    with torch.no_grad():
        y = m(x)
        twin = copy.deepcopy(m)
        ok, err = _close(twin(x), y, rtol=0, atol=1e-6)
    assert ok, f"deep copy differs by {err:.3g}"
    ptrs = {p.data_ptr() for p in m.parameters()}
    assert not any(p.data_ptr() in ptrs for p in twin.parameters()), "deep copy shares parameter storage"


CHECKS: dict[str, Callable[..., None]] = {
    "shapes": check_shapes,
    "gradients": check_gradients,
    "batch_independent": check_batch_independent,
    "state_dict": check_state_dict,
    "two_sizes": check_two_sizes,
    "bf16_autocast": check_bf16_autocast,
    "deepcopy": check_deepcopy,
}


def run_conformance(spec, device: str = "cpu") -> dict[str, str | None]:
    """Run every check; returns ``{check: None if passed else the failure message}``."""
    results: dict[str, str | None] = {}
    for name, check in CHECKS.items():
        try:
            check(spec, device)
            results[name] = None
        except AssertionError as e:
            results[name] = str(e) or "failed"
    return results
