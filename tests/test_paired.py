"""Paired comparisons (issue 20): under one seed, settings that differ only in the mixer start from the same
initialisation where shapes allow and draw the same training batches, and every run keeps its final evaluation per
image (per_image.csv). Everything runs on the embedded default (no data root)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sandbox.config import RunConfig
from sandbox.engine import PatchBatches, _train_images, build_network, build_task_from, train
from sandbox.evaluate import PER_IMAGE_FILE, read_per_image
from sandbox.registry import build_arch, build_mixer

pytestmark = pytest.mark.usefixtures("one_thread", "no_data")  # tests/conftest.py


def config(**changes) -> RunConfig:
    base = RunConfig(arch="ir", mixer="conv", preset="tiny", patch_size=32, batch_size=2, data_root=None)
    return dataclasses.replace(base, **changes)


def built(cfg: RunConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in build_network(cfg).state_dict().items()}


def unpaired(cfg: RunConfig, seed: int) -> dict[str, torch.Tensor]:
    """What the seed alone gives: the network built straight from the registry, without the paired copy."""
    task = build_task_from(cfg)
    torch.manual_seed(seed)
    net = build_arch({"name": "ir", "mixer": cfg.mixer, "preset": cfg.preset, "in_chans": 1, "task": task.name})
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def shared(a: dict, b: dict) -> list[str]:
    return [k for k in a if k in b and a[k].shape == b[k].shape]


def shared_dict(a: dict, b: dict) -> dict[str, torch.Tensor]:
    return {k: a[k] for k in shared(a, b)}


# ------------------------------------------------------------------------------------------------ initialisation
def test_identity_mixer_has_no_parameters_and_draws_nothing():
    state = torch.get_rng_state()
    mixer = build_mixer("identity", 24)
    assert torch.equal(state, torch.get_rng_state()) and not list(mixer.parameters()) and not list(mixer.buffers())


@pytest.mark.parametrize(
    "mixers",
    [("hco", "conv"), (["hco", "conv"], [["conv", "hco:k_mode=predicted_shared"], "pool"])],
    ids=["hco-conv", "lists"],
)
def test_same_seed_same_initialisation_where_shapes_allow(mixers):
    a_cfg, b_cfg = (config(mixer=m) for m in mixers)
    a, b = built(a_cfg, 3), built(b_cfg, 3)
    # what both settings share is what the identity-mixer network has: conv_first, the patch norm, every block's
    # norms and MLP, every group's conv, the final norm, conv_after_body and conv_last (the mixers' attn.* and what
    # they bring, e.g. freq_embed, are their own, even where two mixers happen to have a tensor of one name and shape)
    names = shared(shared_dict(a, b), built(config(mixer="identity"), 0))
    assert {"conv_first.weight", "conv_last.weight", "conv_after_body.weight", "norm.weight"} <= set(names)
    for g in range(2):
        assert f"layers.{g}.conv.weight" in names
        for blk in range(2):
            for part in ("mlp.fc1.weight", "mlp.fc2.weight", "norm1.weight", "norm2.bias"):
                assert f"layers.{g}.residual_group.blocks.{blk}.{part}" in names
    for k in names:
        assert torch.equal(a[k], b[k]), k
    # without the pairing the same seed gives different MLPs / convs after the first mixer (what this test guards)
    ua, ub = unpaired(a_cfg, 3), unpaired(b_cfg, 3)
    assert not torch.equal(ua["conv_last.weight"], ub["conv_last.weight"])
    # the mixers' own parameters are what the seed alone gives them: untouched by the copy
    for ours, alone in ((a, ua), (b, ub)):
        own = [k for k in ours if k not in names]
        assert own and all(".attn." in k or "freq_embed" in k for k in own)
        for k in own:
            assert torch.equal(ours[k], alone[k]), k
    # another seed: another initialisation
    c = built(a_cfg, 4)
    for k in ("conv_first.weight", "layers.0.residual_group.blocks.1.mlp.fc1.weight", "conv_last.weight"):
        assert not torch.equal(a[k], c[k]), k


def test_paired_build_is_deterministic_and_leaves_the_rng_paired():
    states = []
    for mixer in ("hco", "conv", "hco"):
        torch.manual_seed(7)
        build_network(config(mixer=mixer))
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], states[2])  # stochastic depth draws pair too
    first, again = built(config(mixer="hco"), 7), built(config(mixer="hco"), 7)
    assert all(torch.equal(again[k], v) for k, v in first.items())


def test_identity_and_shared_embedding():
    # an identity config is built as it was (nothing to pair)
    ours, alone = built(config(mixer="identity"), 5), unpaired(config(mixer="identity"), 5)
    assert ours.keys() == alone.keys() and all(torch.equal(v, alone[k]) for k, v in ours.items())
    # hco blocks sharing a frequency embedding per group: it exists, keeps its own initialisation
    cfg = config(mixer="hco:k_mode=predicted_shared")
    ours, alone = built(cfg, 5), unpaired(cfg, 5)
    assert "layers.0.freq_embed.weight" in ours
    assert torch.equal(ours["layers.0.freq_embed.weight"], alone["layers.0.freq_embed.weight"])
    assert torch.equal(ours["conv_last.weight"], built(config(mixer="conv"), 5)["conv_last.weight"])


# ------------------------------------------------------------------------------------------------------ batches
@pytest.mark.parametrize("task", ["denoise", "jpeg"])
def test_same_seed_same_batches(task):
    def batches(mixer: str, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = config(task=task, mixer=mixer, seed=seed)
        t = build_task_from(cfg)
        torch.manual_seed(seed)
        net = build_network(cfg, t)  # consumes the global RNG differently per mixer: must not matter
        net(torch.rand(1, 1, 16, 16))
        images, _ = _train_images(t, cfg, None)
        data = PatchBatches(images, t, cfg.patch_size, cfg.batch_size, cfg.seed)
        return [data[step] for step in (1, 2, 3)]

    a, b, c = batches("hco", 0), batches("conv", 0), batches("hco", 1)
    for (ca, da), (cb, db), (cc, dc) in zip(a, b, c):
        assert torch.equal(ca, cb) and torch.equal(da, db)  # same clean patches and same noise / JPEG draws
        assert not torch.equal(ca, cc) and not torch.equal(da, dc)
        assert not torch.equal(ca, da)  # degraded


# ---------------------------------------------------------------------------------------------- per-image results
@pytest.mark.parametrize("task", ["denoise", "jpeg"])
def test_train_writes_per_image_results(tmp_path, task):
    cfg = config(
        task=task, iters=2, eval_every=0, save_every=0, val_images=1, val_crop=32, out=str(tmp_path), name="pi"
    )
    result = train(cfg, progress=False)
    run = result.run_dir
    header = (run / PER_IMAGE_FILE).read_text().splitlines()[0].split(",")
    metrics = ["psnr", "ssim", "psnrb"] if task == "jpeg" else ["psnr", "ssim"]
    assert header == ["set", "image", "degradation", *metrics, "input_psnr", "seconds"]
    rows = read_per_image(run)
    assert len(rows) == sum(s["images"] for s in result.final.values()) and len(rows) >= 2
    assert len({(r["set"], r["image"]) for r in rows}) == len(rows)
    degradation = f"{task}:{build_task_from(cfg).level}"  # denoise:sigma=25, jpeg:q=10
    assert all(r["degradation"] == degradation for r in rows)
    record = json.loads((run / "results.json").read_text())
    assert record["per_image"] == PER_IMAGE_FILE
    for name, scores in record["final"].items():
        mine = [r for r in rows if r["set"] == name]
        for metric in metrics:
            assert abs(sum(r[metric] for r in mine) / len(mine) - scores[metric]) < 1e-4, metric
    if task == "jpeg":
        return
    # resuming the finished run keeps it (the final evaluation is written again, identically)
    before = {(r["set"], r["image"]): (r["psnr"], r["ssim"]) for r in rows}
    train(None, resume=run, progress=False)
    after = {(r["set"], r["image"]): (r["psnr"], r["ssim"]) for r in read_per_image(run)}
    assert after == before
