"""sandbox.stats against scipy on fixed data, and by simulation: coverage under no difference, power for 0.2 dB."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sandbox.errors import OptionError, SandboxError
from sandbox.stats import (
    compare,
    holm,
    paired_difference,
    resolvable_difference,
    runs_table,
    seeds_needed,
    spread,
)


def _scores(values: dict[str, np.ndarray]) -> dict:
    """{setting: (S, I) array} -> {setting: {seed: {image: value}}}."""
    return {
        name: {k: {f"{i:02d}.png": float(v) for i, v in enumerate(row)} for k, row in enumerate(arr)}
        for name, arr in values.items()
    }


def _simulate(rng, seeds, images, delta=0.0, sd_seed=0.05, sd_image=0.15, sd_resid=0.03, sd_level=1.0):
    """Two settings' PSNR tables (S, I): a shared image level, a per-image gain, a per-seed shift, residual noise."""
    level = 30 + sd_level * rng.standard_normal(images)  # (I,) how hard each image is: shared, cancels when paired
    base = level + sd_seed * rng.standard_normal((seeds, 1)) + sd_resid * rng.standard_normal((seeds, images))
    gain = delta + sd_image * rng.standard_normal(images)  # (I,) the other setting's gain differs per image
    other = level + gain + sd_seed * rng.standard_normal((seeds, 1)) + sd_resid * rng.standard_normal((seeds, images))
    return base, other


def test_holm_matches_the_textbook_example():
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") = 0.05 0.08 0.09 0.09 0.09
    np.testing.assert_allclose(holm([0.04, 0.01, 0.05, 0.02, 0.03]), [0.09, 0.05, 0.09, 0.08, 0.09])
    assert holm([0.5, 0.9])[1] == 1.0 or holm([0.5, 0.9])[1] == pytest.approx(0.9)
    out = holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)


def test_one_seed_is_scipy_paired_t_over_images():
    rng = np.random.default_rng(1)
    a, b = _simulate(rng, 1, 12, delta=0.05)
    d = paired_difference(a, b)
    ref = sps.ttest_rel(b[0], a[0])
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert d.delta == pytest.approx(float((b - a).mean()))
    assert d.df == pytest.approx(11)


def test_one_image_is_scipy_paired_t_over_seeds():
    rng = np.random.default_rng(2)
    a, b = rng.normal(30, 0.1, (5, 1)), rng.normal(30.1, 0.1, (5, 1))
    d = paired_difference(a, b)
    assert d.p == pytest.approx(sps.ttest_rel(b[:, 0], a[:, 0]).pvalue, rel=1e-9)


def test_crossed_standard_error_is_the_anova_formula():
    rng = np.random.default_rng(3)
    a, b = _simulate(rng, 4, 10, sd_seed=0.2)
    dd = b - a
    s, n = dd.shape
    sp = spread(dd)
    # the mean squares against a direct two-way ANOVA without replication
    ss_seed = n * ((dd.mean(1) - dd.mean()) ** 2).sum()
    assert sp.ms_seed == pytest.approx(ss_seed / (s - 1))
    resid = dd - dd.mean(1, keepdims=True) - dd.mean(0, keepdims=True) + dd.mean()
    assert sp.ms_resid == pytest.approx((resid**2).sum() / ((s - 1) * (n - 1)))
    d = paired_difference(a, b)
    if sp.ms_seed > sp.ms_resid and sp.ms_image > sp.ms_resid:
        assert d.se**2 == pytest.approx((sp.ms_seed + sp.ms_image - sp.ms_resid) / (s * n))
    # the per-setting interval is scipy's t-interval across seed means
    comp = compare(_scores({"a": a, "b": b}))
    st = comp.settings[0]
    low, high = sps.t.interval(0.95, s - 1, loc=a.mean(1).mean(), scale=sps.sem(a.mean(1)))
    assert (st.low, st.high) == (pytest.approx(low), pytest.approx(high))


def test_no_difference_interval_covers_zero_about_95_percent():
    rng = np.random.default_rng(0)
    covered = significant = 0
    repeats = 200
    for r in range(repeats):
        a, b = _simulate(rng, 3, 12, delta=0.0)
        d = paired_difference(a, b, n_boot=1000, seed=r)
        covered += d.covers_zero
        significant += d.p < 0.05
    assert 0.90 <= covered / repeats <= 0.99, covered
    assert significant / repeats <= 0.10, significant


def test_a_planted_difference_of_0_2_db_is_detected():
    # 3 seeds x 68 images (BSD68) with a seed-to-seed sd of 0.03 dB per network: the design resolves ~0.1 dB
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(50):
        a, b = _simulate(rng, 3, 68, delta=0.2, sd_seed=0.03)
        comp = compare(_scores({"base": a, "better": b}), n_boot=500)
        found += comp.differences["better"].resolved
        assert comp.resolution()["resolvable"] < 0.2
    assert found >= 45, found
    # and the same design does not resolve a planted 0.02 dB
    a, b = _simulate(np.random.default_rng(6), 3, 68, delta=0.02, sd_seed=0.03)
    assert not compare(_scores({"base": a, "better": b})).differences["better"].resolved


def test_compare_marks_ranks_and_footer():
    rng = np.random.default_rng(7)
    a, b = _simulate(rng, 3, 12, delta=0.0)
    _, worse = _simulate(rng, 3, 12, delta=-1.5)
    comp = compare(_scores({"hco": a, "conv": b, "identity": worse}))
    assert comp.differences["identity"].resolved and comp.differences["identity"].delta < -1
    assert comp.ranks["identity"] == 3
    table, footer = comp.markdown(), comp.footer()
    assert "baseline" in table and "*" in table.splitlines()[-1] + table
    assert "so this design resolves" in footer and "0.1 dB needs" in footer and "- `identity` − `hco`" in footer
    assert comp.resolution()["needed"][0.1] is None or comp.resolution()["needed"][0.1] >= 2


def test_one_seed_says_no_interval():
    rng = np.random.default_rng(8)
    a, b = _simulate(rng, 1, 12)
    comp = compare(_scores({"a": a, "b": b}))
    assert "no interval: 1 seed" in comp.markdown()
    assert "1 seed: no interval covers training noise" in comp.footer()


def test_seeds_needed_shrinks_the_resolvable_difference():
    rng = np.random.default_rng(9)
    a, b = _simulate(rng, 3, 68, sd_seed=0.05, sd_image=0.05)
    sp = spread(b - a)
    k = seeds_needed(sp, 0.05)
    assert k is not None and resolvable_difference(sp, k) <= 0.05
    if k > 2:
        assert resolvable_difference(sp, k - 1) > 0.05


def test_bad_inputs_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(10)
    a, b = _simulate(rng, 2, 5)
    scores = _scores({"a": a, "b": b})
    with pytest.raises(OptionError, match="baseline 'c' is not one of the settings"):
        compare(scores, baseline="c")
    del scores["b"][1]["03.png"]
    with pytest.raises(OptionError, match="different images"):
        compare(scores)
    # per-image files of two degradations, or of different degraded inputs
    head = "set,image,degradation,psnr,ssim,input_psnr,seconds\n"
    (tmp_path / "a.csv").write_text(head + "Set12,01.png,denoise:sigma=25,30.0,0.8,20.1,0.1\n")
    (tmp_path / "b.csv").write_text(head + "Set12,01.png,denoise:sigma=50,27.0,0.7,14.2,0.1\n")
    (tmp_path / "c.csv").write_text(head + "Set12,01.png,denoise:sigma=25,30.1,0.8,20.3,0.1\n")
    with pytest.raises(SandboxError, match="different degradations"):
        runs_table({"a": {0: tmp_path / "a.csv"}, "b": {0: tmp_path / "b.csv"}})
    with pytest.raises(SandboxError, match="degraded input of Set12/01.png differs"):
        runs_table({"a": {0: tmp_path / "a.csv"}, "c": {0: tmp_path / "c.csv"}})
    scores, set_name, degradation = runs_table({"a": {0: tmp_path / "a.csv"}})
    assert scores == {"a": {0: {"01.png": 30.0}}} and set_name == "Set12" and degradation == "denoise:sigma=25"
    with pytest.raises(SandboxError, match="no results on 'BSD68'"):
        runs_table({"a": {0: tmp_path / "a.csv"}}, set_name="BSD68")
