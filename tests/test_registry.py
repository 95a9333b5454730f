"""The generic Registry and the mixer registry built on it."""

import subprocess
import sys

import pytest
from torch import nn

from sandbox import MIXERS, OptionError, Registry, SandboxError, UnknownNameError, build_mixer, list_mixers, parse_spec
from sandbox.registry import register_mixer

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as e:
        build_mixer("hyena_pixl", 32)
    msg = str(e.value)
    assert "'hyena_pixel'" in msg and "python -m sandbox mixers" in msg and "\n" not in msg


def test_unknown_option_names_mixer_and_accepted_options():
    with pytest.raises(OptionError) as e:
        build_mixer({"name": "hco", "kmode": "fixed"}, 8)
    msg = str(e.value)
    assert "'hco'" in msg and "'kmode'" in msg and "did you mean 'k_mode'" in msg and "embed_size" in msg
    assert "dim" not in msg.split("accepts:")[1]  # dim is positional, not an option


def test_specs():
    assert parse_spec("hco") == ("hco", {})
    assert parse_spec("hco:k_mode=fixed,k=0.5,t=1") == ("hco", {"k_mode": "fixed", "k": 0.5, "t": 1})
    assert parse_spec("x:sizes=[3,5],flag=true,none=None") == ("x", {"sizes": [3, 5], "flag": True, "none": None})
    spec = {"name": "conv", "kernel_size": 3}
    assert parse_spec(spec) == ("conv", {"kernel_size": 3}) and spec == {"name": "conv", "kernel_size": 3}
    with pytest.raises(OptionError, match="no 'name'"):
        parse_spec({"kernel_size": 3})
    with pytest.raises(OptionError, match="key=value"):
        parse_spec("conv:3")
    m = build_mixer({"name": "conv", "kernel_size": 3}, 8)
    assert m.dwconv.kernel_size == (3, 3)
    assert build_mixer("conv:kernel_size=5", 8).dwconv.kernel_size == (5, 5)


def test_list_with_wildcards_and_excludes():
    assert list_mixers("hyena*") == ["hyena", "hyena_bi", "hyena_pixel"]
    assert list_mixers("hyena*", exclude="*_bi") == ["hyena", "hyena_pixel"]
    assert list_mixers(["conv", "pool"]) == ["conv", "pool"]
    assert list_mixers() == sorted(list_mixers())
    assert "hco" in MIXERS and len(MIXERS) >= 13


def test_registering_twice_is_an_error():
    reg = Registry("widget")

    @reg.register("a_b")
    class A:
        pass

    with pytest.raises(SandboxError, match="already registered"):
        reg.register("a_b")(A)
    with pytest.raises(SandboxError, match="snake_case"):
        reg.register("NotSnake")
    with pytest.raises(SandboxError, match="already registered"):
        register_mixer("hco", paper="p", family="f", complexity="c")(nn.Identity)


def test_mixer_registration_requires_metadata():
    with pytest.raises(SandboxError, match="metadata"):
        MIXERS.register("no_meta_mixer", paper="p")


def test_second_registry_is_independent():
    tasks = Registry("task", list_hint="see list_tasks('{pattern}')")
    tasks.register("denoise")(dict)
    assert tasks.list() == ["denoise"] and "denoise" not in MIXERS
    with pytest.raises(UnknownNameError, match="did you mean 'denoise'.*list_tasks"):
        tasks.build("denoize")


def test_every_mixer_has_metadata():
    for name in list_mixers():
        e = MIXERS.entry(name)
        for field in ("paper", "family", "complexity", "sizes"):
            assert e.meta.get(field), f"{name} lacks {field}"
        assert e.summary, f"{name} has no docstring"


def test_importing_registry_and_operators_pulls_no_heavy_dependencies():
    code = (
        "import sys, torch, sandbox, operators\n"
        "from sandbox import build_mixer, list_mixers\n"
        "[build_mixer(n, 8) for n in list_mixers()]\n"
        "bad = [m for m in ('basicsr', 'lpips', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = run("-c", code)
    assert r.returncode == 0, r.stderr


def test_cli_lists_every_mixer_with_metadata():
    r = run("-m", "sandbox", "mixers", "--options")
    assert r.returncode == 0, r.stderr
    for name in list_mixers():
        assert f"| {name} |" in r.stdout
    assert "O(N^1.5)" in r.stdout and "paper" in r.stdout


def test_cli_bad_name_is_one_line_error():
    r = run("-m", "sandbox", "check", "hyena_pixl")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "did you mean 'hyena_pixel'" in r.stderr
