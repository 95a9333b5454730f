"""Plugins: a user mixer loaded by --plugin, $SANDBOX_PLUGINS or an entry point, listed, built and conformant."""

import os
import subprocess
import sys
import textwrap

import pytest

from sandbox import MIXERS, SandboxError, build_mixer, list_mixers, load_plugins
from sandbox.conformance import run_conformance

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent(
    '''
    """A user's own mixer, in the user's own module."""
    import torch.nn.functional as F
    from torch import nn

    from sandbox import register_mixer


    @register_mixer("{key}", paper="a user, 2026", family="conv", complexity="O(N)")
    class Blur(nn.Module):
        """3x3 learned blur followed by a 1x1 mix. (B, C, H, W) -> (B, C, H, W), any size."""

        def __init__(self, dim: int, gain: float = 1.0):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.pw = nn.Conv2d(dim, dim, 1)
            self.gain = gain

        def forward(self, x):
            return self.pw(self.dw(x)) * self.gain
    '''
)


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run(args, env, cwd=ROOT):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture
def plugin_module(tmp_path):
    (tmp_path / "my_mixers_tmp.py").write_text(PLUGIN.format(key="user_blur"))
    yield "my_mixers_tmp"
    MIXERS.unregister("user_blur")
    sys.modules.pop("my_mixers_tmp", None)


def test_plugin_is_listed_built_and_conformant(tmp_path, plugin_module, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins([plugin_module])
    assert "user_blur" in list_mixers("user_*")
    m = build_mixer("user_blur:gain=0.5", 16)
    assert m.gain == 0.5
    assert run_conformance("user_blur") == {k: None for k in run_conformance("identity")}


def test_plugin_flag_and_env_var_in_commands(tmp_path, plugin_module):
    env = _env(tmp_path)
    r = run(["-m", "sandbox", "mixers", "user_*", "--plugin", plugin_module], env)
    assert r.returncode == 0, r.stderr
    assert "| user_blur | conv |" in r.stdout
    r = run(["-m", "sandbox", "mixers", "user_*"], _env(tmp_path, SANDBOX_PLUGINS=plugin_module))
    assert "| user_blur |" in r.stdout, r.stderr
    # a plugin given as a file path
    r = run(["-m", "sandbox", "mixers", "user_*", "--plugin", str(tmp_path / "my_mixers_tmp.py")], os.environ.copy())
    assert "| user_blur |" in r.stdout, r.stderr


def test_conformance_suite_includes_plugins(tmp_path, plugin_module):
    env = _env(tmp_path, SANDBOX_PLUGINS=plugin_module)
    r = run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_conformance.py", "-k", "user_blur and not cuda"],
        env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "7 passed" in r.stdout, r.stdout[-2000:]


def test_entry_point_plugin(tmp_path):
    (tmp_path / "ep_mixers_tmp.py").write_text(PLUGIN.format(key="ep_blur"))
    dist = tmp_path / "ep_mixers_tmp-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-mixers-tmp\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mixer_sandbox.mixers]\nblur = ep_mixers_tmp\n")
    code = (
        "from sandbox import build_mixer, list_mixers\n"
        "print(list_mixers('ep_*'))\n"
        "print(type(build_mixer('ep_blur', 4)).__name__)\n"
    )
    r = run(["-c", code], _env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "['ep_blur']" in r.stdout and "Blur" in r.stdout


def test_plugin_errors_are_one_line(tmp_path, monkeypatch):
    env = _env(tmp_path)
    r = run(["-m", "sandbox", "mixers", "--plugin", "no_such_module_xyz"], env)
    assert r.returncode == 2 and "no_such_module_xyz" in r.stderr and r.stderr.strip().count("\n") == 0
    (tmp_path / "clash_tmp.py").write_text(PLUGIN.format(key="hco"))
    r = run(["-m", "sandbox", "mixers", "--plugin", "clash_tmp"], env)
    assert r.returncode == 2 and "already registered" in r.stderr and r.stderr.strip().count("\n") == 0
    (tmp_path / "broken_tmp.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SandboxError, match="broken_tmp.*RuntimeError: boom"):
        load_plugins(["broken_tmp"])
