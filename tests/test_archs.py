"""The network registry: every registered network builds, runs at odd sizes and trains; discovery and errors."""

import subprocess
import sys

import pytest
import torch

from sandbox import ARCHS, SandboxError, UnknownNameError, build_arch, count_macs, list_archs

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def smallest(name: str):
    """The network in its smallest configuration: the ``tiny`` preset where it has presets."""
    options = ARCHS.entry(name).options()
    kw = {"preset": "tiny"} if "preset" in options else {}
    if ARCHS.entry(name).meta["family"] == "classification":
        kw["num_classes"] = 10
    return build_arch(name, **kw)


@pytest.mark.parametrize("name", list_archs())
def test_every_network_runs_at_odd_size_and_every_parameter_learns(name):
    torch.manual_seed(0)
    net = smallest(name)
    family = ARCHS.entry(name).meta["family"]
    c = net.in_chans
    x = torch.rand(2, c, 37, 29) if family != "classification" else torch.rand(1, c, 65, 47)
    y = net(x)
    want = x.shape if family != "classification" else (x.shape[0], 10)
    assert tuple(y.shape) == tuple(want), f"expected {tuple(want)}, got {tuple(y.shape)}"
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"No gradient for {missing[:5]}"


def test_unknown_network_suggests_close_match():
    with pytest.raises(UnknownNameError) as e:
        build_arch("vheat_tinny")
    assert "did you mean 'vheat_tiny'" in str(e.value) and "python -m sandbox archs" in str(e.value)


def test_registry_rejects_bad_family():
    from sandbox.registry import register_arch

    with pytest.raises(SandboxError, match="family 'segmentation'"):
        register_arch("x", family="segmentation", paper="-")


def test_count_macs_counts_a_multiply_add_once():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (1, 4, 10, 10)) == 8 * 4 * 9 * 100


def test_cli_lists_networks_with_params_and_flops():
    out = subprocess.run(
        [sys.executable, "-m", "sandbox", "archs", "dncnn", "ir", "--size", "32"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("| dncnn") or line.startswith("| ir ")]
    assert len(lines) == 2
    dncnn = [c.strip() for c in lines[0].split("|")]
    assert dncnn[4] == "555.14K" and dncnn[6] == "1x1x32x32"
    weights = 555_137 - (16 * 64 + 1)  # all parameters but the 17 conv biases
    assert dncnn[5] == f"{weights * 32 * 32 / 1e6:.2f}M"  # a same-padded conv net: one MAC per weight per pixel
