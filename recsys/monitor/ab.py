"""A/B readout statistics (numpy/stdlib only, so they run anywhere); users are assigned to variants by
:func:`recsys.serve.experiment.assign`.

For a binary outcome per impression (clicked or not): the pooled two-proportion z-test (two-sided), Wilson score
intervals per variant, and a normal (Wald, unpooled) interval for the difference. These are the standard
large-sample tools; they assume independent impressions, which per-user clustering violates mildly — the
simulator's users see few impressions each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from recsys.serve.experiment import ABSettings


@dataclass(frozen=True)
class Proportion:
    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(p: Proportion, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good coverage even near 0 or 1, unlike Wald's)."""
    if p.trials == 0:
        return float("nan"), float("nan")
    z, n, phat = _z(confidence), p.trials, p.rate
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(treatment: Proportion, control: Proportion, confidence: float = 0.95) -> dict[str, float]:
    """Pooled z-test of H0: equal rates (two-sided p), and a Wald interval of ``treatment - control``."""
    n1, n2 = treatment.trials, control.trials
    if n1 == 0 or n2 == 0:
        return {"diff": float("nan"), "z": float("nan"), "p_value": float("nan"),
                "diff_low": float("nan"), "diff_high": float("nan")}
    p1, p2 = treatment.rate, control.rate
    pooled = (treatment.successes + control.successes) / (n1 + n2)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    diff = p1 - p2
    if se0 == 0:
        z, p_value = 0.0, 1.0       # both all-0 or all-1: no evidence either way
    else:
        z = diff / se0
        p_value = math.erfc(abs(z) / math.sqrt(2.0))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = _z(confidence) * se
    return {"diff": diff, "z": z, "p_value": p_value, "diff_low": diff - half, "diff_high": diff + half}


def balance_test(counts: dict[str, int], ab: ABSettings) -> dict[str, float]:
    """Sample-ratio check: chi-square of observed users per variant against the configured shares.

    A small p (say < 0.001) means assignment or logging is broken (a "sample ratio mismatch"), whatever
    the outcome metrics say. p from the chi-square survival function via the regularised gamma series.
    """
    names = sorted(ab.variants)
    observed = np.array([counts.get(n, 0) for n in names], dtype=float)
    expected = observed.sum() * np.array([ab.variants[n].share for n in names])
    stat = float(((observed - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())
    return {"chi2": stat, "dof": len(names) - 1, "p_value": _chi2_sf(stat, len(names) - 1)}


def _chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof) = Q(dof/2, x/2), by series for the lower gamma (fine for small dof)."""
    if x <= 0 or dof <= 0:
        return 1.0
    a, t = dof / 2.0, x / 2.0
    term = total = 1.0 / a
    k = 1
    while term > total * 1e-15 and k < 10_000:
        term *= t / (a + k)
        total += term
        k += 1
    lower = total * math.exp(-t + a * math.log(t) - math.lgamma(a))
    return min(1.0, max(0.0, 1.0 - lower))
