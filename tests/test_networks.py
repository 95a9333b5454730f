"""One network builder (sandbox/networks.py) for training, evaluation, the BasicSR engine and visualize.py."""

from __future__ import annotations

import pytest
import torch

from sandbox.config import RunConfig
from sandbox.errors import OptionError, SandboxError
from sandbox.evaluate import load_network
from sandbox.networks import build_network_for, network_spec
from sandbox.registry import build_task
from sandbox.train_config import build_network


def test_precedence_defaults_task_spec_flags_overrides():
    task = build_task("denoise:sigma=25")
    spec = network_spec(
        "ir:preset=tiny,embed_dim=12",
        task,
        defaults={"mixer": "conv", "preset": "small", "not_an_option": 1},  # defaults the network lacks are dropped
        flags={"mixer": "pool", "in_chans": None},  # None: flag not given
        overrides={"embed_dim": 16},
    )
    assert spec == {"name": "ir", "mixer": "pool", "preset": "tiny", "in_chans": 1, "task": "denoise", "embed_dim": 16}


def test_weights_bring_their_channels_and_sigma_input_networks_get_the_noise_level():
    task = build_task("denoise_color:sigma=15")
    assert "in_chans" not in network_spec("swinir", task, fresh=False)
    assert network_spec("ffdnet", task)["sigma"] == 15
    assert network_spec("ffdnet:sigma=50", task)["sigma"] == 50  # the spec's own value wins


def test_a_flag_the_network_does_not_take_is_one_line():
    with pytest.raises(OptionError, match=r"network 'dncnn' has no option 'mixer' \(--mixer\)"):
        network_spec("dncnn", flags={"mixer": "conv"})


def test_training_and_evaluation_build_the_same_network(tmp_path):
    task = build_task("denoise:sigma=25")
    config = RunConfig(arch="ir", mixer="conv", preset="tiny", arch_options={"embed_dim": 8, "depths": [1]})
    torch.manual_seed(0)
    trained = build_network(config, task)
    assert trained.arch_spec == {
        "name": "ir", "mixer": "conv", "preset": "tiny", "in_chans": 1, "task": "denoise", "embed_dim": 8,
        "depths": [1],
    }  # fmt: skip
    state = {"arch_spec": trained.arch_spec, "state_dict": trained.state_dict()}
    loaded = load_network(None, "run.pth", task, checkpoint=state)
    assert loaded.arch_spec == trained.arch_spec
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(SandboxError, match="checkpoint"):
        build_network_for("ir:preset=tiny,mixer=pool,embed_dim=8,depths=[1]", task, checkpoint=state)
