"""The mixer contract, checked over every registered mixer (built-ins, $SANDBOX_PLUGINS, --plugin, entry points)."""

import pytest
import torch

from sandbox import list_mixers
from sandbox.conformance import CHECKS

MIXER_NAMES = list_mixers()


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", MIXER_NAMES)
def test_mixer_contract(name, check):
    CHECKS[check](name, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("check", ["shapes", "gradients", "bf16_autocast", "two_sizes"])
@pytest.mark.parametrize("name", MIXER_NAMES)
def test_mixer_contract_cuda(name, check):
    CHECKS[check](name, "cuda")


def test_all_paper_operators_registered():
    expected = {
        "hco", "ftfu", "mpfb", "hyena", "hyena_bi", "hyena_pixel", "attention_window", "attention_global",
        "conv", "sepconv", "gfnet", "pool", "identity",
    }  # fmt: skip
    missing = expected - set(MIXER_NAMES)
    assert not missing, f"mixers missing from the registry: {sorted(missing)}"
