"""One declaration per run setting: each RunConfig field's declaration (sandbox/config.py) is its flag in run.py,
compare.py and sweep.py, its YAML key and its --set key; --eval-sets means one thing in every command."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from sandbox.config import (
    RunConfig,
    apply_overrides,
    command_overrides,
    field_help,
    flag_fields,
    flag_of,
    load_config_file,
    parse_set,
    set_names,
)
from sandbox.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script_flags", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


run, compare, sweep, evaluate = (_load(n) for n in ("run", "compare", "sweep", "evaluate"))


def _parser(module) -> argparse.ArgumentParser:
    """The command's parser, caught as parse_args builds it."""
    caught = {}
    real = argparse.ArgumentParser.parse_args

    def catch(self, args=None, namespace=None):
        caught["parser"] = self
        return real(self, args, namespace)

    argparse.ArgumentParser.parse_args = catch
    try:
        module.parse_args(["--study", "hco_k"] if module is sweep else [])
    finally:
        argparse.ArgumentParser.parse_args = real
    return caught["parser"]


def _config_actions(parser: argparse.ArgumentParser, own: tuple[str, ...] = ()) -> dict[str, list[argparse.Action]]:
    """RunConfig field -> the parser's actions that write it, less the command's ``own`` flags of that name."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    out: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.dest in names and not set(action.option_strings) & set(own):
            out.setdefault(action.dest, []).append(action)
    return out


def test_every_field_is_declared_once_with_help_and_section():
    for f in dataclasses.fields(RunConfig):
        assert f.metadata.get("help"), f"RunConfig.{f.name} has no declared help"
        assert f.metadata.get("group") in ("what to train", "data", "optimisation", "bookkeeping"), f.name


def test_every_flagged_field_reaches_run_py_exactly_once_with_its_declared_help():
    actions = _config_actions(_parser(run))
    flagged = {f.name for f in flag_fields()}
    assert set(actions) == flagged, set(actions) ^ flagged  # the others are reached through --set
    for name, acts in actions.items():
        assert len(acts) == 1, f"{name} has {len(acts)} flags in run.py"
        assert acts[0].option_strings == [flag_of(name)]
        assert acts[0].help.replace("%%", "%").startswith(field_help(name))
    text = _parser(run).format_help()
    assert text.count("--budget-minutes BUDGET_MINUTES") == 2  # usage and the option itself: declared once


def test_compare_and_sweep_accept_the_same_run_setting_flags():
    run_flags = {n: a[0].option_strings for n, a in _config_actions(_parser(run)).items()}
    compare_actions = _config_actions(_parser(compare), own=("--mixer", "--out"))
    compare_flags = {n: a[0].option_strings for n, a in compare_actions.items()}
    sweep_flags = {
        n: a[0].option_strings for n, a in _config_actions(_parser(sweep), own=("--out", "--workers")).items()
    }
    # compare.py sets mixer, name and out per run (its --mixer and --out are its own); sweep.py names the runs and
    # has its own --out (and --workers: worker processes, not DataLoader workers)
    assert compare_flags == {n: f for n, f in run_flags.items() if n not in compare.RESERVED_KEYS}
    assert sweep_flags == {n: f for n, f in run_flags.items() if n not in sweep.NO_FLAG}
    for module in (compare, sweep):
        for name, acts in _config_actions(_parser(module), own=("--mixer", "--out", "--workers")).items():
            assert len(acts) == 1, (module.__name__, name)
            assert acts[0].help.replace("%%", "%").startswith(field_help(name)), (module.__name__, name)


def test_flags_become_overrides_only_when_given():
    args = run.parse_args(["--lr", "1e-3", "--eval-sets", "Set12, BSD68", "--budget-minutes", "2"])
    assert command_overrides(args) == {"lr": 1e-3, "eval_sets": ("Set12", "BSD68"), "budget_minutes": 2.0}
    assert command_overrides(run.parse_args([])) == {}


@pytest.mark.parametrize("argv", [["--eval-sets", "all"], ["--eval-sets", ""]])
def test_eval_sets_all_means_every_benchmark_in_run_and_compare(argv):
    assert run.overrides_from(run.parse_args(argv))["eval_sets"] is None
    assert compare.base_config(compare.parse_args(argv)).eval_sets is None


def test_eval_sets_all_is_every_benchmark_in_a_sweep_too(tmp_path):
    """A trial's eval_sets=None means its first benchmark, so the sweep writes 'all' out as the task's list."""
    (tmp_path / "benchmarks").mkdir()
    args = sweep.parse_args(["--study", "hco_k", "--eval-sets", "all", "--data-root", str(tmp_path)])
    overrides = sweep.trial_overrides(args, [])
    assert overrides["eval_sets"] == ("Set12", "BSD68")  # denoise's benchmarks
    no_data = sweep.trial_overrides(sweep.parse_args(["--study", "hco_k", "--eval-sets", "all"]), [])
    assert no_data["eval_sets"] is None or no_data["eval_sets"][0] == "Set12"  # $SANDBOX_DATA may be set


def test_evaluate_takes_eval_sets_with_the_same_meaning():
    assert evaluate.parse_args(["--method", "noisy", "--eval-sets", "Set12,BSD68"]).sets == ("Set12", "BSD68")
    assert evaluate.parse_args(["--method", "noisy", "--sets", "Set12"]).sets == ("Set12",)  # the older name
    assert evaluate.parse_args(["--method", "noisy", "--eval-sets", "all"]).sets is None
    assert set_names(" Set12 ,, BSD68 ") == ("Set12", "BSD68")


def test_set_reads_eval_sets_as_the_flag_does():
    assert parse_set(["eval_sets=all"]) == {"eval_sets": None}
    assert parse_set(["eval_sets=Set12, BSD68"]) == {"eval_sets": ("Set12", "BSD68")}
    assert parse_set(["train_sets=BSD400,WED"]) == {"train_sets": ("BSD400", "WED")}


def test_yaml_keys_are_the_field_names(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.001\neval_sets: [Set12]\narch_options: {embed_dim: 16}\n")
    cfg = apply_overrides(RunConfig(), load_config_file(path))
    assert (cfg.lr, cfg.eval_sets, cfg.arch_options) == (1e-3, ("Set12",), {"embed_dim": 16})
    path.write_text("eval_sets: all\n")  # as --eval-sets all
    assert apply_overrides(RunConfig(eval_sets=("Set12",)), load_config_file(path)).eval_sets is None
    path.write_text("batch-size: 4\n")  # the flag's spelling is not a key
    with pytest.raises(OptionError, match="no field 'batch-size'; did you mean 'batch_size'"):
        apply_overrides(RunConfig(), load_config_file(path))


def test_precedence_is_config_file_then_flags_then_set_in_every_command(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\niters: 7\npatch_size: 32\narch_options: {embed_dim: 16}\n")
    argv = ["--config", str(path), "--lr", "0.02", "--iters", "9", "--set", "iters=11"]
    argv += ["--set", "arch_options.depths=[1]"]
    for cfg in (
        apply_overrides(RunConfig(), run.overrides_from(run.parse_args(argv))),
        compare.base_config(compare.parse_args(argv)),
    ):
        assert (cfg.lr, cfg.iters, cfg.patch_size) == (0.02, 11, 32)
        assert cfg.arch_options == {"embed_dim": 16, "depths": [1]}


def test_reserved_settings_are_one_line_errors():
    with pytest.raises(OptionError, match="compare.py sets mixer, name and out"):
        compare.base_config(compare.parse_args(["--set", "name=x"]))
    with pytest.raises(OptionError, match="use --seed"):
        sweep.trial_overrides(sweep.parse_args(["--study", "hco_k", "--set", "seed=3"]), [])
    with pytest.raises(OptionError, match="--iters and --budget-minutes exclude each other"):
        sweep.check_counts(sweep.parse_args(["--study", "hco_k", "--iters", "5", "--budget-minutes", "1"]))


def test_a_bad_flag_value_is_one_line_from_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        run.parse_args(["--lr", "fast"])
    assert e.value.code == 2 and "argument --lr: invalid float value: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mixer", "conv"], "sets mixer (--mixer or --set mixer=...), which study parameter 'k' varies"),
        (["--set", "mixer=conv"], "sets mixer (--mixer or --set mixer=...), which study parameter 'k' varies"),
    ],
)
def test_a_sweep_refuses_settings_that_its_study_varies(argv, message):
    from sandbox.registry import list_mixers
    from sandbox.sweep import load_study_spec

    spec = load_study_spec("hco_k", sweep.STUDY_DIR, mixer_names=list_mixers())
    with pytest.raises(OptionError, match=re.escape(message)):
        sweep.preflight(spec, sweep.trial_overrides(sweep.parse_args(["--study", "hco_k", *argv]), []))
    mixer_study = load_study_spec("mixer", sweep.STUDY_DIR, mixer_names=list_mixers())
    with pytest.raises(OptionError, match=re.escape("sets arch_options.embed_dim (--set arch_options.embed_dim=...)")):
        sweep.check_not_varied(mixer_study, {"arch_options": {"embed_dim": 8}})
    sweep.check_not_varied(mixer_study, {"arch_options": {"depths": [1]}, "iters": 5})  # not varied: fine
