"""`python -m sandbox mixers` and `archs` list from the registry alone: no network or mixer is built, every registered
name is listed (plugins included), and parameter/MAC counts come on request or from registration metadata."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

import sandbox.__main__ as cli
from sandbox import ARCHS, MIXERS, list_archs, list_mixers
from sandbox.registry import register_arch

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent(
    '''
    """A user's mixer and network, registered by a plugin module."""
    from torch import nn

    from sandbox import register_arch, register_mixer


    @register_mixer("listing_user_mixer", paper="a user, 2026", family="conv", complexity="O(N)")
    class UserMixer(nn.Identity):
        def __init__(self, dim: int):
            super().__init__()


    @register_arch("listing_user_net", family="restoration", paper="a user, 2026", params=4321)
    def user_net(in_chans: int = 1):
        raise RuntimeError("built by the listing")
    '''
)


@pytest.fixture
def no_builds(monkeypatch):
    """Building any network or mixer fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError(f"the listing built {args[:1]}")

    monkeypatch.setattr(cli, "build_arch", fail)
    monkeypatch.setattr(ARCHS, "build", fail)
    monkeypatch.setattr(MIXERS, "build", fail)


@pytest.fixture
def user_net():
    @register_arch("listing_declared_net", family="classification", paper="-", params=1234, macs=5_600_000)
    def declared(in_chans: int = 3):
        return nn.Conv2d(in_chans, 2, 1)

    yield "listing_declared_net"
    ARCHS.unregister("listing_declared_net")


def _rows(out: str) -> dict[str, list[str]]:
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    return {row[0]: row for row in cells[1:]}


def test_archs_listing_builds_nothing_and_lists_every_network(no_builds, user_net, capsys):
    assert cli.main(["archs"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert sorted(rows) == list_archs() and user_net in rows and len(rows) >= 17
    assert rows["dncnn"][3:6] == ["-", "-", "1x1x128x128"]  # in_chans from the entrypoint's default
    assert rows["swinir"][2] == "paper" and rows["caformer_s18"][5] == "1x3x224x224"
    assert rows[user_net][3:5] == ["1.23K", "5.60M"]  # declared at registration
    assert "--params" in out and "python -m sandbox archs NAME" in out


def test_archs_counts_on_request(user_net, capsys):
    assert cli.main(["archs", user_net, "dncnn", "--size", "16"]) == 0  # exact names: params and MACs counted
    rows = _rows(capsys.readouterr().out)
    assert rows[user_net][3:6] == ["8", "1.54K", "1x3x16x16"]  # Conv2d(3, 2, 1): 6 weights + 2 biases, 6 MACs/pixel
    assert rows["dncnn"][3] == "555.14K"
    assert cli.main(["archs", "listing_decl*", "--params"]) == 0  # a pattern with --params: parameters only
    assert _rows(capsys.readouterr().out)[user_net][3:5] == ["8", "5.60M"]
    assert cli.main(["archs", "listing_decl*", "--macs", "--size", "16"]) == 0
    assert _rows(capsys.readouterr().out)[user_net][3:5] == ["8", "1.54K"]


def test_mixers_listing_builds_nothing(no_builds, capsys):
    assert cli.main(["mixers", "--options", "--module"]) == 0
    assert sorted(_rows(capsys.readouterr().out)) == list_mixers()


def test_listings_include_plugins_without_building_them(tmp_path):
    (tmp_path / "listing_plugin_tmp.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    run = lambda *a: subprocess.run([sys.executable, "-m", "sandbox", *a, "--plugin", "listing_plugin_tmp"],
                                    capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)  # fmt: skip
    r = run("archs", "--family", "restoration")
    assert r.returncode == 0, r.stderr
    assert "| listing_user_net | restoration |  | 4.32K | - | 1x1x128x128 |" in r.stdout  # declared, not built
    r = run("mixers")
    assert r.returncode == 0, r.stderr
    assert "| listing_user_mixer | conv | O(N) |" in r.stdout
