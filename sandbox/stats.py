"""Which differences between training settings are real: paired statistics over settings x seeds x images.

A comparison holds one score per (setting, seed, image), e.g. the PSNR of each benchmark image after training a
setting with seed k. Seed k gives every setting the same patches, noise draws and (shared) initialisation, and every
setting is evaluated on the same degraded images, so two settings are compared *paired*: on the same seeds and images.

    >>> from sandbox.stats import compare
    >>> data = {"hco": {0: {"01.png": 30.1, "02.png": 29.4}, 1: {...}}, "conv": {...}}   # setting -> seed -> image
    >>> comp = compare(data, baseline="hco")
    >>> print(comp.markdown()); print(comp.footer())

What it reports, per setting:

- the mean over seeds and images with a 95% t-interval across the seeds' means (n seeds; none with one seed);
- the difference to the baseline (other minus baseline), paired on the seeds both have and the same images, with a
  95% percentile interval from a hierarchical bootstrap (resample seeds, then images), widened to at least the
  t-interval of the same standard error (a percentile bootstrap over 3 seeds alone covers ~80%), and a two-sided
  p-value from a paired t-test whose standard error has a seed and an image component (a crossed two-way layout with
  Satterthwaite's degrees of freedom: with one seed it is ``scipy.stats.ttest_rel`` over the images, with one image
  over the seeds); Holm's correction over the rows;
- a difference is *resolved* when its Holm-corrected p is below ``alpha``, its interval excludes 0 and it rests on
  2 or more seeds (one seed says nothing about training noise);
- rank groups: settings in descending mean order share the rank of the group's leader until one is resolved from it
  (pairwise tests, Holm over all pairs).

Under the table (:meth:`Comparison.footer`): for the median difference and for each difference to the baseline,
its seed-to-seed and image-to-image spread, the smallest difference the design resolves with 80% power at ``alpha``,
and the number of seeds that would resolve 0.05 dB and 0.1 dB (or that more seeds cannot: the images set a floor).
Distributions and tests come from ``scipy.stats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import OptionError, SandboxError

__all__ = [
    "Comparison",
    "Difference",
    "Setting",
    "compare",
    "holm",
    "paired_difference",
    "resolvable_difference",
    "seeds_needed",
    "spread",
    "runs_table",
    "forest_plot",
]

Scores = Mapping[str, Mapping[int, Mapping[str, float]]]  # setting -> seed -> image -> score
TARGETS = (0.05, 0.1)  # dB: the differences whose seed counts are printed under every table
POWER = 0.8  # the power at which a difference counts as resolvable


# ------------------------------------------------------------------------------------------------- building blocks
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))  # the i-th smallest times (m - i), monotone
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class Spread:
    """Mean squares of a (seeds x images) table of paired differences, and the variance components they give."""

    seeds: int
    images: int
    ms_seed: float  # between seeds (df seeds - 1); NaN with one seed
    ms_image: float  # between images (df images - 1); NaN with one image
    ms_resid: float  # seed x image interaction (df (seeds - 1)(images - 1)); NaN with one seed or one image

    @property
    def var_seed(self) -> float:
        """Seed-to-seed variance of a setting difference (a whole trained network shifts every image)."""
        return self._component(self.ms_seed, self.seeds, self.images)

    @property
    def var_image(self) -> float:
        """Image-to-image variance of the difference (some images gain more than others)."""
        return self._component(self.ms_image, self.images, self.seeds)

    def _component(self, ms: float, levels: int, per_level: int) -> float:
        """(MS - MS_resid) / per_level, floored at 0 (E[MS] = var_resid + per_level * var); NaN with one level."""
        if levels < 2:
            return math.nan
        resid = self.ms_resid if per_level > 1 else 0.0
        return max(0.0, (ms - resid) / per_level)

    @property
    def var_resid(self) -> float:
        return self.ms_resid if self.seeds > 1 and self.images > 1 else 0.0


def spread(d: np.ndarray) -> Spread:
    """The two-way ANOVA mean squares of paired differences ``d`` (seeds, images)."""
    d = np.asarray(d, dtype=np.float64)
    s, n = d.shape
    grand = d.mean()
    seed_means, image_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * ((seed_means - grand) ** 2).sum() / (s - 1) if s > 1 else math.nan
    ms_image = s * ((image_means - grand) ** 2).sum() / (n - 1) if n > 1 else math.nan
    if s > 1 and n > 1:
        resid = d - seed_means[:, None] - image_means[None, :] + grand
        ms_resid = (resid**2).sum() / ((s - 1) * (n - 1))
    else:
        ms_resid = math.nan
    return Spread(s, n, float(ms_seed), float(ms_image), float(ms_resid))


def _se_df(var_seed: float, var_image: float, var_resid: float, seeds: int, images: int) -> tuple[float, float]:
    """Standard error of the mean difference over ``seeds`` x ``images`` and its Satterthwaite degrees of freedom.

    Var(mean) = var_seed / S + var_image / I + var_resid / (S I). Each component is estimated from one mean square
    (E[MS_seed] = var_resid + I var_seed, E[MS_image] = var_resid + S var_image, E[MS_resid] = var_resid), so the
    variance is a linear combination of mean squares and Satterthwaite's formula gives its degrees of freedom.
    """
    s, n = seeds, images
    terms = []  # (coefficient * expected mean square, df) whose sum is Var(mean)
    vs = 0.0 if math.isnan(var_seed) else var_seed
    vi = 0.0 if math.isnan(var_image) else var_image
    ve = var_resid
    if s > 1 and n > 1:
        # var_seed / S = (MS_seed - MS_resid) / (S I) when positive; likewise for images; written per mean square
        terms.append(((ve + n * vs) / (s * n), s - 1) if vs > 0 else (0.0, s - 1))
        terms.append(((ve + s * vi) / (s * n), n - 1) if vi > 0 else (0.0, n - 1))
        k = 1 - (vs > 0) - (vi > 0)  # MS_resid enters with coefficient +1, 0 or -1
        terms.append((k * ve / (s * n), (s - 1) * (n - 1)))
    elif s > 1:
        terms.append((vs / s, s - 1))
    elif n > 1:
        terms.append((vi / n, n - 1))
    var = sum(t for t, _ in terms)
    if not terms or var <= 0:
        return 0.0, math.inf
    df = var**2 / sum(t**2 / d for t, d in terms if t != 0)
    return math.sqrt(var), df


def resolvable_difference(sp: Spread, seeds: int | None = None, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true difference a paired test at ``alpha`` finds with probability ``power`` on a design of
    ``seeds`` seeds (default: the measured one) and the same images: (t_{1-alpha/2} + t_{power}) x SE."""
    from scipy import stats

    seeds = sp.seeds if seeds is None else seeds
    var_seed = sp.var_seed if sp.seeds > 1 else 0.0  # unknown with one seed: reported as a lower bound by callers
    se, df = _se_df(var_seed, sp.var_image, sp.var_resid, seeds, sp.images)
    if se == 0:
        return 0.0
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def seeds_needed(sp: Spread, target: float, alpha: float = 0.05, power: float = POWER, most: int = 1000) -> int | None:
    """The fewest seeds (>= 2) at which :func:`resolvable_difference` is at most ``target``; None when more seeds
    cannot get there (the image-to-image spread alone is too large) or the seed spread is unknown (one seed)."""
    if sp.seeds < 2 or resolvable_difference(sp, most, alpha, power) > target:
        return None
    low, high = 1, most  # the resolvable difference shrinks as seeds grow: bisect for the first seed count that fits
    while high - low > 1:
        mid = (low + high) // 2
        if resolvable_difference(sp, mid, alpha, power) <= target:
            high = mid
        else:
            low = mid
    return max(high, 2)


def image_floor(sp: Spread, alpha: float = 0.05, power: float = POWER) -> float:
    """The resolvable difference with infinitely many seeds: what the image-to-image spread alone allows."""
    from scipy import stats

    if sp.images < 2 or math.isnan(sp.var_image):
        return 0.0
    se = math.sqrt(sp.var_image / sp.images)
    df = sp.images - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


@dataclass
class Difference:
    """``other - baseline``, paired on ``seeds`` and the same images."""

    setting: str
    baseline: str
    delta: float
    low: float  # 95% hierarchical-bootstrap interval, at least the t-interval (with 1 seed: images only)
    high: float
    p: float  # two-sided paired t-test
    se: float
    df: float
    seeds: list[int]
    images: int
    spread: Spread
    p_holm: float = math.nan
    resolved: bool = False

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


def paired_difference(
    base: np.ndarray,
    other: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    names: tuple[str, str] = ("other", "baseline"),
    seeds: Sequence[int] | None = None,
) -> Difference:
    """The paired difference ``other - base`` of two (seeds, images) score arrays aligned on seeds and images."""
    from scipy import stats

    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.shape != other.shape or base.ndim != 2 or base.size == 0:
        raise OptionError(
            f"paired scores must be two (seeds, images) arrays of one shape; got {base.shape}, {other.shape}"
        )
    d = other - base  # (S, I)
    s, n = d.shape
    sp = spread(d)
    delta = float(d.mean())
    # hierarchical bootstrap: draw seeds with replacement, then images with replacement, and average
    rng = np.random.default_rng(seed)
    si = rng.integers(0, s, size=(n_boot, s))  # (B, S)
    ii = rng.integers(0, n, size=(n_boot, n))  # (B, I)
    boot = d[si[:, :, None], ii[:, None, :]].mean(axis=(1, 2))  # (B,)
    tail = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(boot, [tail, 1 - tail]))
    se, df = _se_df(sp.var_seed, sp.var_image, sp.var_resid, s, n)
    # A percentile bootstrap over 3 seeds is too narrow (it cannot see tails it has no seed for: 79% coverage in
    # simulation when the seed spread dominates), so the interval is widened to at least the t-interval with the
    # same standard error; where the bootstrap is wider (skewed differences) it is kept.
    if se > 0:
        half = float(stats.t.ppf(1 - tail, df)) * se
        low, high = min(low, delta - half), max(high, delta + half)
    if se > 0:
        p = float(2 * stats.t.sf(abs(delta) / se, df))
    else:  # every paired difference identical: no spread to test against
        p = 1.0 if delta == 0 else 0.0
    return Difference(names[0], names[1], delta, low, high, p, se, df, list(seeds or range(s)), n, sp)


# ------------------------------------------------------------------------------------------------------ comparison
@dataclass
class Setting:
    """One setting's scores: mean over seeds and images, and the 95% interval across its seeds' means."""

    name: str
    seeds: list[int]
    seed_means: np.ndarray  # (S,) mean over images per seed
    mean: float
    low: float  # NaN with one seed
    high: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def seed_sd(self) -> float:
        return float(np.std(self.seed_means, ddof=1)) if self.n > 1 else math.nan


@dataclass
class Comparison:
    """Settings, their differences to a baseline, rank groups and the design's resolution; see the module doc."""

    metric: str
    settings: list[Setting]
    baseline: str
    differences: dict[str, Difference]  # setting -> difference to the baseline (the baseline itself absent)
    ranks: dict[str, int]
    images: int
    alpha: float = 0.05
    unit: str = "dB"
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------------ resolution
    def pooled(self) -> Spread | None:
        """One spread for the design: the median over the rows of each mean square (a floor setting such as identity,
        whose gain varies wildly from image to image, does not set the design's resolution); None without a row."""
        sps = [d.spread for d in self.differences.values()]
        if not sps:
            return None
        med = lambda xs: float(np.median(xs)) if not any(math.isnan(x) for x in xs) else math.nan  # noqa: E731
        return Spread(
            min(sp.seeds for sp in sps),
            sps[0].images,
            med([sp.ms_seed for sp in sps]),
            med([sp.ms_image for sp in sps]),
            med([sp.ms_resid for sp in sps]),
        )

    def resolution(self, name: str | None = None) -> dict[str, Any]:
        """What the design resolves, from one row's spread (``name``) or the pooled one: the seed-to-seed and
        image-to-image sds of the difference, the resolvable difference now, its floor with infinitely many seeds, and
        the seeds needed for each of :data:`TARGETS` (None: not reachable, or unknown with one seed)."""
        sp = self.differences[name].spread if name is not None else self.pooled()
        if sp is None:
            return {}
        return {
            "seeds": sp.seeds,
            "images": sp.images,
            "seed_sd": math.sqrt(sp.var_seed) if sp.seeds > 1 else math.nan,
            "image_sd": math.sqrt(sp.var_image) if sp.images > 1 else math.nan,
            "resolvable": resolvable_difference(sp, alpha=self.alpha),
            "floor": image_floor(sp, alpha=self.alpha),
            "needed": {t: seeds_needed(sp, t, alpha=self.alpha) for t in TARGETS},
        }

    # ----------------------------------------------------------------------------------------------- rendering
    def cells(self, name: str) -> dict[str, str]:
        """The formatted cells of one setting: ``mean``, ``delta``, ``p``, ``rank``."""
        st = next(s for s in self.settings if s.name == name)
        if st.n > 1:
            mean = f"{st.mean:.3f} ± {(st.high - st.low) / 2:.3f} (n={st.n})"
        else:
            mean = f"{st.mean:.3f} (no interval: 1 seed)"
        if name == self.baseline:
            delta, p = "baseline", ""
        else:
            d = self.differences[name]
            mark = " *" if d.resolved else ""
            delta = f"{d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{mark}"
            p = _fmt_p(d.p_holm)
        return {"mean": mean, "delta": delta, "p": p, "rank": str(self.ranks[name])}

    def columns(self) -> list[str]:
        return [
            f"{self.metric.upper()} mean ± 95% CI",
            f"Δ vs {self.baseline} [95% CI]",
            "p (Holm)",
            "rank",
        ]

    def markdown(self, order: Sequence[str] | None = None) -> str:
        """The table: setting, mean ± CI, difference ± CI (``*``: resolved), Holm p, rank group."""
        from .cli import markdown_table

        names = list(order) if order is not None else [s.name for s in self.settings]
        rows = []
        for name in names:
            c = self.cells(name)
            rows.append([f"`{name}`", c["mean"], c["delta"], c["p"], c["rank"]])
        return markdown_table(["setting", *self.columns()], rows, "lrrrr")

    def footer(self) -> str:
        """The text under every table: what the numbers mean, then what this design resolves, per difference."""
        seeds = sorted({len(s.seeds) for s in self.settings})
        unit = self.unit
        lines = [
            f"{self.metric.upper()} in {unit} over {'/'.join(map(str, seeds))} seed(s) x {self.images} images. Mean ± "
            "half-width of the 95% t-interval across the seeds' means. Δ = setting − baseline, paired on the same "
            "seeds and images, with a 95% hierarchical-bootstrap interval (seeds, then images) widened to at least "
            "the t-interval; p from a paired t-test with seed and image variance, Holm-corrected over the rows; `*`: "
            f"resolved (p < {self.alpha:g}, the interval excludes 0, 2+ seeds). Settings share a rank until one is "
            "resolved from the group's leader (Holm over all pairs).",
        ]
        pooled = self.resolution()
        if not pooled:
            return "\n\n".join(lines + self.notes)
        if pooled["seeds"] < 2:
            lines.append(
                f"**1 seed: no interval covers training noise.** The intervals and p-values above cover the "
                f"{pooled['images']} images only; the seed-to-seed spread is unknown, so any difference here may be "
                f"noise and none is called resolved. Image-to-image sd of a difference {pooled['image_sd']:.3f} {unit} "
                f"(median over the rows); even with many seeds these images resolve no less than "
                f"{pooled['floor']:.3f} {unit}. Run 2 or more seeds (--seeds) for intervals."
            )
            return "\n\n".join(lines + self.notes)

        def needed(r: dict[str, Any]) -> str:
            parts = []
            for t, k in r["needed"].items():
                parts.append(f"{t:g} {unit} needs " + (f"{k} seeds" if k else f"more images (floor {r['floor']:.3f})"))
            return ", ".join(parts)

        lines.append(
            f"**Resolution** (80% power, alpha {self.alpha:g}, paired, {pooled['seeds']} seeds x {pooled['images']} "
            f"images): the median difference here has a seed-to-seed sd of {pooled['seed_sd']:.3f} {unit} and an "
            f"image-to-image sd of {pooled['image_sd']:.3f} {unit}, so this design resolves "
            f"**{pooled['resolvable']:.3f} {unit}**; {needed(pooled)}. Per difference:"
        )
        rows = []
        for name in self.differences:
            r = self.resolution(name)
            rows.append(
                f"- `{name}` − `{self.baseline}`: seed sd {r['seed_sd']:.3f}, image sd {r['image_sd']:.3f} {unit}; "
                f"resolves {r['resolvable']:.3f} {unit} now; {needed(r)}"
            )
        lines.append("\n".join(rows))
        return "\n\n".join(lines + self.notes)

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per setting (CSV/JSON): mean, interval, difference, p values, rank."""
        out = []
        for st in self.settings:
            d = self.differences.get(st.name)
            out.append(
                {
                    "setting": st.name,
                    "seeds": st.n,
                    "mean": st.mean,
                    "ci_low": st.low,
                    "ci_high": st.high,
                    "seed_sd": st.seed_sd,
                    "delta": d.delta if d else 0.0,
                    "delta_low": d.low if d else math.nan,
                    "delta_high": d.high if d else math.nan,
                    "p": d.p if d else math.nan,
                    "p_holm": d.p_holm if d else math.nan,
                    "resolved": bool(d.resolved) if d else False,
                    "resolvable": self.resolution(st.name)["resolvable"] if d else math.nan,
                    "rank": self.ranks[st.name],
                }
            )
        return out


def _resolved(d: Difference, p_adjusted: float, alpha: float) -> bool:
    """Resolved: significant after correction, the interval excludes 0, and over 2+ seeds (with one seed the
    interval covers the images only, not the training noise, so nothing is called resolved)."""
    return bool(p_adjusted < alpha and not d.covers_zero and len(d.seeds) > 1)


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _aligned(scores: Scores, name: str, seeds: Sequence[int], images: Sequence[str]) -> np.ndarray:
    return np.array([[scores[name][k][i] for i in images] for k in seeds], dtype=np.float64)  # (S, I)


def compare(
    scores: Scores,
    baseline: str | None = None,
    metric: str = "psnr",
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    unit: str = "dB",
) -> Comparison:
    """Compare settings paired on seeds and images; see the module doc for what each number is.

    Args:
        scores: ``{setting: {seed: {image: score}}}``; every run must hold the same images (else one-line error).
        baseline: the setting the differences are taken to (default: the first).
        metric: the score's name, for the table.
        alpha: the significance level (family-wise, Holm).
        n_boot: bootstrap resamples per difference.
        seed: the bootstrap's generator seed (the same resamples for every difference).
    """
    names = list(scores)
    baseline = names[0] if names and baseline is None else baseline
    images = _common_images(scores, baseline)
    settings = [_setting(scores, name, images) for name in names]
    notes: list[str] = []

    def diff(a: str, b: str) -> Difference:
        return _difference(scores, a, b, images, n_boot, seed, notes)

    differences = {name: diff(baseline, name) for name in names if name != baseline}
    adjusted = holm([d.p for d in differences.values()])
    for d, p in zip(differences.values(), adjusted):
        d.p_holm = float(p)
        d.resolved = _resolved(d, p, alpha)
    ranks = _rank_groups(settings, baseline, differences, diff, alpha)
    return Comparison(metric, settings, baseline, differences, ranks, len(images), alpha, unit, notes)


def _common_images(scores: Scores, baseline: str | None) -> list[str]:
    """The images every run was evaluated on; one-line errors for no settings, an unknown baseline, a setting
    without runs, or runs on different images."""
    names = list(scores)
    if not names:
        raise OptionError("nothing to compare: no settings with results")
    if baseline not in scores:
        raise OptionError(f"baseline {baseline!r} is not one of the settings: {', '.join(map(repr, names))}")
    images = None
    for name in names:
        if not scores[name]:
            raise OptionError(f"setting {name!r} has no finished run to compare")
        for k, per_image in scores[name].items():
            keys = sorted(per_image)
            if images is None:
                images, first = keys, (name, k)
            elif keys != images:
                missing = sorted(set(images) - set(keys))[:3]
                extra = sorted(set(keys) - set(images))[:3]
                raise OptionError(
                    f"cannot pair {name!r} seed {k} with {first[0]!r} seed {first[1]}: they were evaluated on "
                    f"different images ({len(keys)} vs {len(images)}; missing {missing}, extra {extra}); evaluate "
                    "every run on the same sets"
                )
    assert images is not None
    return images


def _setting(scores: Scores, name: str, images: Sequence[str]) -> Setting:
    """One setting's mean over seeds and images with the 95% t-interval across its seeds' means."""
    from scipy import stats

    seeds = sorted(scores[name])
    seed_means = _aligned(scores, name, seeds, images).mean(axis=1)  # (S,)
    mean = float(seed_means.mean())
    if len(seeds) > 1:
        sem = float(stats.sem(seed_means))
        low, high = stats.t.interval(0.95, len(seeds) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    else:
        low = high = math.nan
    return Setting(name, seeds, seed_means, mean, float(low), float(high))


def _difference(
    scores: Scores, a: str, b: str, images: Sequence[str], n_boot: int, seed: int, notes: list[str]
) -> Difference:
    """``b`` minus ``a`` paired on the seeds both finished (a note in ``notes`` when that is not all of them)."""
    common = sorted(set(scores[a]) & set(scores[b]))
    if not common:
        raise OptionError(f"settings {a!r} and {b!r} have no seed in common; pairing needs the same seeds")
    if len(common) < max(len(scores[a]), len(scores[b])):
        note = f"`{b}` vs `{a}` is paired on seeds {common} (the seeds both finished)."
        if note not in notes:
            notes.append(note)
    return paired_difference(
        _aligned(scores, a, common, images),
        _aligned(scores, b, common, images),
        n_boot,
        seed,
        names=(b, a),
        seeds=common,
    )


def _rank_groups(
    settings: list[Setting],
    baseline: str,
    differences: dict[str, Difference],
    diff: Callable[[str, str], Difference],
    alpha: float,
) -> dict[str, int]:
    """Rank groups: descending mean; a setting joins its leader's group unless resolved from it (Holm over all
    pairs). The baseline's pairs reuse ``differences`` (sign aside); the others are computed by ``diff``."""
    by_mean = sorted(settings, key=lambda s: -s.mean)
    pairs = {}  # (higher mean, lower mean) -> difference
    for i, a in enumerate(by_mean):
        for b in by_mean[i + 1 :]:
            known = differences.get(b.name) if a.name == baseline else None
            known = differences.get(a.name) if b.name == baseline else known
            pairs[(a.name, b.name)] = known if known is not None else diff(a.name, b.name)
    pair_p = dict(zip(pairs, holm([d.p for d in pairs.values()])))
    ranks: dict[str, int] = {}
    leader = None
    for position, st in enumerate(by_mean, 1):
        if leader is not None:
            d = pairs[(leader, st.name)]
            if not _resolved(d, pair_p[(leader, st.name)], alpha):
                ranks[st.name] = ranks[leader]
                continue
        leader = st.name
        ranks[st.name] = position
    return ranks


# ---------------------------------------------------------------------------------------------------- from runs
def runs_table(
    runs: Mapping[str, Mapping[int, str | Path]], set_name: str | None = None, metric: str = "psnr"
) -> tuple[dict[str, dict[int, dict[str, float]]], str, str]:
    """Read the per-image results of runs: ``{setting: {seed: run dir or per_image.csv}}`` ->
    (scores for :func:`compare` on ``set_name``, the set, the degradation).

    Every run must have been evaluated with the same degradation and on the same degraded inputs (the per-image
    input PSNR agrees to 1e-3 dB), else one :class:`SandboxError` line names the two runs.
    """
    from .evaluate import read_per_image

    scores: dict[str, dict[int, dict[str, float]]] = {}
    ref: tuple[str, str, dict[tuple[str, str], float]] | None = None  # (run, degradation, input psnr per image)
    for name, by_seed in runs.items():
        scores[name] = {}
        for k, where in by_seed.items():
            rows = read_per_image(where)
            sets = list(dict.fromkeys(r["set"] for r in rows))
            set_name = set_name or sets[0]
            if set_name not in sets:
                raise SandboxError(
                    f"run {str(where)!r} has no results on {set_name!r} (it was evaluated on {', '.join(sets)})"
                )
            if metric not in rows[0]:
                raise SandboxError(f"{str(where)!r} has no {metric!r} column")
            chosen = [r for r in rows if r["set"] == set_name]
            degradation = rows[0].get("degradation", "")
            inputs = {r["image"]: r.get("input_psnr", math.nan) for r in chosen}
            if ref is None:
                ref = (str(where), degradation, inputs)
            elif degradation != ref[1]:
                raise SandboxError(
                    f"cannot pair {str(where)!r} ({degradation or 'unknown degradation'}) with {ref[0]!r} "
                    f"({ref[1] or 'unknown degradation'}): they were evaluated on different degradations"
                )
            else:
                for image, value in inputs.items():
                    other = ref[2].get(image, value)
                    if abs(other - value) > 1e-3:  # NaN (no input PSNR recorded) passes
                        raise SandboxError(
                            f"cannot pair {str(where)!r} with {ref[0]!r}: the degraded input of {set_name}/{image} "
                            f"differs ({value:.3f} vs {other:.3f} dB input PSNR)"
                        )
            scores[name][int(k)] = {r["image"]: float(r[metric]) for r in chosen}
    if ref is None or set_name is None:
        raise OptionError("no runs to read")
    return scores, set_name, ref[1]


def read_set_names(where: str | Path) -> list[str]:
    """The evaluation sets of one run's per-image results, in order."""
    from .evaluate import read_per_image

    return list(dict.fromkeys(r["set"] for r in read_per_image(where)))


# ------------------------------------------------------------------------------------------------------ forest plot
def forest_plot(comp: Comparison, path: str | Path, title: str = "") -> Path:
    """Δ vs the baseline with its 95% interval per setting (filled: resolved), the zero line, and the band of
    differences this design cannot resolve."""
    from .report import new_figure, save_figure

    diffs = [comp.differences[s.name] for s in comp.settings if s.name in comp.differences]
    fig = new_figure((7.0, 0.9 + 0.45 * max(1, len(diffs))))
    ax = fig.add_subplot()
    res = comp.resolution()
    band = res.get("resolvable", math.nan)
    if band and not math.isnan(band):
        ax.axvspan(-band, band, color="0.9", zorder=0, label=f"not resolvable by this design (±{band:.3f} {comp.unit})")
    ax.axvline(0.0, color="0.3", linewidth=1, zorder=1)
    for y, d in enumerate(reversed(diffs)):
        color = "tab:blue" if d.resolved else "tab:gray"
        ax.plot([d.low, d.high], [y, y], color=color, linewidth=2, zorder=2)
        ax.plot([d.delta], [y], "o", color=color, markerfacecolor=color if d.resolved else "white", zorder=3)
    ax.set_yticks(range(len(diffs)))
    ax.set_yticklabels([d.setting for d in reversed(diffs)], fontsize=8)
    ax.set_ylim(-0.7, len(diffs) - 0.3)
    ax.set_xlabel(f"Δ {comp.metric.upper()} vs {comp.baseline} ({comp.unit}), 95% bootstrap interval; filled: resolved")
    ax.set_title(title or f"difference to {comp.baseline}", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, Path(path))
