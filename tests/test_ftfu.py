"""FTFU (`ftfu`) and MPFB (`mpfb`): closed form against an ODE solver, numerical edge cases, options, the contract."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import solve_ivp

from operators.ftfu import FTFU, PHI1_SERIES_BELOW, Z_MIN, ftfu_dynamics, phi1
from operators.mpfb import FUSIONS, time_scales
from sandbox.conformance import run_conformance
from sandbox.errors import OptionError
from sandbox.registry import build_mixer


def ode_solution(x: float, f: float, tau: float, A: float) -> float:
    """y(tau) of dy/dt = -(tau + f) y + f A, y(0) = x, by numerical integration."""
    sol = solve_ivp(lambda t, y: -(tau + f) * y + f * A, (0.0, tau), [x], method="DOP853", rtol=1e-10, atol=1e-12)
    assert sol.success, sol.message
    return float(sol.y[0, -1])


# (x, f, tau, A) covering z = (tau + f) tau > 0, |z| < 1e-6, z = 0 exactly, and z < 0 above the clamp
ELEMENTS = [
    (0.7, 0.3, 1.2, 1.0),  # z = 1.8
    (-1.3, 2.5, 0.4, -0.6),  # z = 1.16
    (2.0, -0.2, 3.0, 0.5),  # z = 8.4
    (0.5, -1.0 + 3e-7, 1.0, 2.0),  # z = 3e-7
    (-0.4, -0.5 - 2e-7, 0.5, 1.5),  # z = -1e-7
    (1.1, -0.75, 0.75, 0.8),  # z = 0 exactly
    (0.9, -1.5, 0.5, 1.0),  # z = -0.5
    (-0.6, -4.0, 1.5, -0.7),  # z = -3.75
    (0.3, -3.0, 2.0, 1.0),  # z = -2 (tau = 2)
    (1.0, -3.5, 2.9, 0.4),  # z = -1.74
    (0.2, -6.0, 2.0, 1.0),  # z = -8
]


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-8), (torch.float32, 1e-5)])
def test_dynamics_match_ode_solver(dtype, rtol):
    zs = [(tau + f) * tau for _, f, tau, _ in ELEMENTS]
    assert max(zs) > 0 and min(zs) < 0 and min(abs(z) for z in zs) < 1e-6 and min(zs) > Z_MIN
    x, f, tau, A = (torch.tensor(col, dtype=dtype) for col in zip(*ELEMENTS))
    y = ftfu_dynamics(x, f, tau, A)
    for i, elem in enumerate(ELEMENTS):
        ref = ode_solution(*elem)
        err = abs(y[i].item() - ref)
        assert err <= rtol * max(abs(ref), 1.0), f"element {elem} (z={zs[i]:.3g}): got {y[i].item()!r}, ODE {ref!r}"


def test_alpha_zero_is_exact_zero_leak_limit():
    x, f, tau, A = (torch.tensor(v, dtype=torch.float64) for v in (1.1, -0.75, 0.75, 0.8))
    assert (tau + f).item() == 0.0
    assert ftfu_dynamics(x, f, tau, A).item() == pytest.approx((x + f * A * tau).item(), rel=1e-15)


def _forced_unit(dtype: torch.dtype) -> FTFU:
    """A linear-activation unit whose channels span alpha > 0, alpha < 0 and |alpha tau| < 1e-6."""
    torch.manual_seed(0)
    unit = FTFU(4, kernel_size=3, activation="linear").to(dtype)
    with torch.no_grad():
        unit.beta.copy_(torch.tensor([0.5, 2.0, 1.0, -2.0]))
        unit.A.copy_(torch.tensor([1.0, -0.5, 2.0, 0.7]))
        # channel 2: F constant and tau independent of X, then pick the bias so that alpha = 2e-7
        unit.dwconv.weight[2].zero_()
        unit.gate.weight[2].zero_()
        tau2 = torch.nn.functional.softplus(unit.gate.bias[2]) + unit.tau_min
        unit.dwconv.bias[2] = -(tau2 - 2e-7)
    return unit


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-8), (torch.float32, 1e-5)])
def test_module_matches_ode_solver(dtype, rtol):
    unit = _forced_unit(dtype)
    x = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    with torch.no_grad():
        y = unit(x)
        f, tau = unit.coefficients(x)
    z = (tau + f) * tau  # (B, C, H, W)
    assert z.max() > 1 and z.min() < -1 and z.min() > Z_MIN, f"z range [{z.min():.3g}, {z.max():.3g}]"
    flat = z.flatten()
    picks = {int(flat.argmax()), int(flat.argmin()), int(flat.abs().argmin())}
    picks |= {int(i) for i in torch.nonzero(flat > 0)[:3, 0]} | {int(i) for i in torch.nonzero(flat < 0)[:3, 0]}
    assert flat.abs().min() < 1e-6
    A = unit.A.detach()[None, :, None, None].expand_as(x).flatten()
    tau_full = tau.expand_as(x).flatten()
    for i in sorted(picks):
        elem = (x.flatten()[i].item(), f.flatten()[i].item(), tau_full[i].item(), A[i].item())
        ref = ode_solution(*elem)
        got = y.flatten()[i].item()
        assert abs(got - ref) <= rtol * max(abs(ref), 1.0), f"z={flat[i].item():.3g}: got {got!r}, ODE {ref!r}"


def _all_finite(unit: torch.nn.Module, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    y = unit(x)
    assert torch.isfinite(y).all(), "non-finite output"
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all(), "non-finite input gradient"
    for name, p in unit.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"gradient of {name} missing or non-finite"


def test_alpha_exactly_zero_is_finite():
    torch.manual_seed(0)
    unit = FTFU(8, activation="linear")
    x = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        unit.dwconv.weight.zero_()
        unit.gate.weight.zero_()
        _, tau = unit.coefficients(x)
        unit.dwconv.bias.copy_(-tau[0, :, 0, 0])  # f = beta * F = -tau, so alpha = tau + f = 0 exactly
        f, tau = unit.coefficients(x)
        assert ((tau + f) == 0).all()
        y = unit(x)
    assert torch.allclose(y, x + f * unit.A.detach()[:, None, None] * tau, rtol=1e-6, atol=1e-6)  # zero-leak limit
    _all_finite(unit, x)


@pytest.mark.parametrize("activation, beta", [("relu", -50.0), ("linear", 50.0), ("tanh", -50.0)])
def test_strongly_negative_alpha_is_finite(activation, beta):
    torch.manual_seed(0)
    unit = FTFU(8, activation=activation)
    with torch.no_grad():
        unit.beta.fill_(beta)
    x = 3 * torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        f, tau = unit.coefficients(x)
    assert ((tau + f) * tau).min() < Z_MIN, "the test should reach the clamp"
    _all_finite(unit, x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(unit(x)).all()


def test_phi1_continuity_at_switch():
    b = PHI1_SERIES_BELOW
    for dtype, tol, gtol in ((torch.float64, 1e-15, 1e-12), (torch.float32, 2e-7, 5e-5)):
        for sign in (1.0, -1.0):
            z = torch.tensor([sign * b * (1 - 1e-6), sign * b * (1 + 1e-6)], dtype=dtype, requires_grad=True)
            v = phi1(z)
            assert (z.detach().abs() < b).tolist() == [True, False]  # one point on each branch
            zs = z.detach().tolist()
            refs = [-math.expm1(-t) / t for t in zs]  # float64 closed form, accurate to ~1 ulp here
            for got, ref, t in zip(v.tolist(), refs, zs):
                assert abs(got - ref) < tol, f"phi1({t!r}) = {got!r}, expected {ref!r}"
            # the step across the switch is the true change of phi1 over the z step, nothing more
            jump = abs((v[0] - v[1]).item() - (refs[0] - refs[1]))
            assert jump < 2 * tol, f"phi1 jumps by {jump:.3g} at z={sign * b}"
            (g,) = torch.autograd.grad(v.sum(), z)
            drefs = [_dphi1(t) for t in zs]
            for got, ref, t in zip(g.tolist(), drefs, zs):
                assert abs(got - ref) < gtol, f"phi1'({t!r}) = {got!r}, expected {ref!r}"
            jump = abs((g[0] - g[1]).item() - (drefs[0] - drefs[1]))
            assert jump < 2 * gtol, f"phi1' jumps by {jump:.3g} at z={sign * b}"


def _dphi1(z: float) -> float:
    """phi1'(z) = sum_{k >= 1} k (-z)^(k-1) (-1) / (k + 1)!, summed in float64 (|z| <= 1)."""
    return sum(-k * (-z) ** (k - 1) / math.factorial(k + 1) for k in range(1, 30))


def test_phi1_values_and_gradients():
    z = torch.tensor([0.0, 1e-12, -1e-12, 1e-6, -3.0, -10.0, 0.5, 30.0, 1e4], dtype=torch.float64, requires_grad=True)
    v = phi1(z)
    ref = [1.0 if t == 0 else -math.expm1(-t) / t for t in z.tolist()]
    assert torch.allclose(v, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)
    (g,) = torch.autograd.grad(v.sum(), z)
    assert torch.isfinite(g).all() and g[0].item() == -0.5
    z32 = torch.logspace(-8, 1.5, 40).repeat(2) * torch.tensor([1.0, -1.0]).repeat_interleave(40)
    ref32 = phi1(z32.double())
    assert torch.allclose(phi1(z32).double(), ref32, rtol=1e-6, atol=0)


def test_init_tau_and_time_scales():
    assert time_scales(3) == [0.5, 1.0, 2.0] and time_scales(1) == [1.0]
    mixer = build_mixer("mpfb", 16)
    assert [u.time_scale for u in mixer.units] == [0.5, 1.0, 2.0]
    unit = FTFU(16, time_scale=2.0)
    _, tau = unit.coefficients(torch.zeros(1, 16, 4, 4))
    assert torch.allclose(tau, torch.full_like(tau, 2 * (1 + 1e-3)), rtol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fusion_activation_builds_and_runs(fusion, activation):
    torch.manual_seed(0)
    m = build_mixer({"name": "mpfb", "fusion": fusion, "activation": activation}, 16)
    x = torch.randn(2, 16, 7, 9)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        yb = m(x)
    assert yb.shape == x.shape and torch.isfinite(yb).all()


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
def test_ftfu_activations_run(activation):
    m = build_mixer({"name": "ftfu", "activation": activation, "kernel_size": 5}, 16)
    x = torch.randn(2, 16, 7, 9)
    assert m(x).shape == x.shape


@pytest.mark.parametrize(
    "spec",
    ["ftfu", "mpfb", *({"name": "mpfb", "fusion": f} for f in FUSIONS), {"name": "mpfb", "phases": 1}],
    ids=lambda s: s if isinstance(s, str) else ",".join(f"{k}={v}" for k, v in s.items()),
)
def test_conformance(spec):
    results = run_conformance(spec)
    assert all(v is None for v in results.values()), results


@pytest.mark.parametrize("phases", [1, 2, 4])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_phase_counts(phases, fusion):
    m = build_mixer({"name": "mpfb", "phases": phases, "fusion": fusion}, 8)
    x = torch.randn(1, 8, 3, 1)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_bf16_autocast_dynamics_stay_fp32():
    torch.manual_seed(0)
    unit = FTFU(16)
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        ref = unit(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f, tau = unit.coefficients(x)
            y = unit(x)
    assert f.dtype == tau.dtype == y.dtype == torch.float32
    assert ((y - ref).norm() / ref.norm()).item() < 0.02
    for name in ("ftfu", "mpfb"):
        m = build_mixer(name, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
        out.float().sum().backward()
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize(
    "spec, bad",
    [
        ({"name": "mpfb", "fusion": "sum"}, "'sum'"),
        ({"name": "ftfu", "activation": "gelu"}, "'gelu'"),
        ({"name": "mpfb", "activation": "gelu"}, "'gelu'"),
        ({"name": "mpfb", "phases": 0}, "phases=0"),
        ({"name": "mpfb", "phases": 2.0}, "phases=2.0"),
        ({"name": "ftfu", "kernel_size": 4}, "kernel_size=4"),
        ({"name": "mpfb", "kernel_size": 2}, "kernel_size=2"),
    ],
)
def test_bad_options_raise(spec, bad):
    with pytest.raises(OptionError) as info:
        build_mixer(spec, 16)
    msg = str(info.value)
    assert bad in msg and "\n" not in msg, msg


def test_bad_unit_options_raise():
    with pytest.raises(OptionError):
        FTFU(8, time_scale=0.0)
    with pytest.raises(OptionError):
        FTFU(8, tau_min=-1e-3)
