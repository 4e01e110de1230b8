"""The statistics of the increment: intervals for rates and for revenue per person, and power.

- `wilson_interval`: the Wilson score interval of one rate (good coverage also for rates
  near 0 and small groups, where the textbook Wald interval fails).
- `newcombe_interval`: the difference of two independent rates by Newcombe's hybrid score
  method (method 10 of Newcombe 1998), built from the two Wilson intervals.
- `bootstrap_mean_difference`: the difference of two means (revenue per person) by a
  seeded percentile bootstrap. Revenue per person is zero for most people, so a resample
  of n people is drawn as "how many of the n picks hit a buyer" (binomial) and "which
  buyers" (uniform; multinomial over the distinct amounts when there are few): exactly the
  same distribution as resampling all n values, at the cost of the buyers only, vectorised
  with numpy.
- `minimum_detectable_effect`: the smallest difference of two rates a two-sided test at
  level alpha finds with the given power (normal approximation, unpooled alternative).

No database, no plotting: imported by the report, by `kms campaign validate` and by tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 20261122
# Draws per chunk of resamples: bounds the memory of a bootstrap over a million people.
_DRAWS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0 <= self.high

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. per person → for the whole audience)."""
        ends = sorted((self.low * factor, self.high * factor))
        return Interval(self.estimate * factor, ends[0], ends[1])


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """The rate successes/trials with its Wilson score interval; (0, 0, 1) for no trials."""
    if trials == 0:
        return Interval(0.0, 0.0, 1.0)
    z = _z(confidence)
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    # At a rate of 0 or 1 the bounds can miss the rate itself by a rounding error.
    return Interval(rate, min(rate, max(0.0, centre - half)), max(rate, min(1.0, centre + half)))


def newcombe_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, confidence: float = CONFIDENCE
) -> Interval:
    """The difference rate_a - rate_b with Newcombe's hybrid score interval (method 10)."""
    a = wilson_interval(successes_a, trials_a, confidence)
    b = wilson_interval(successes_b, trials_b, confidence)
    difference = a.estimate - b.estimate
    low = difference - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = difference + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(difference, low, high)


def _resampled_sums(rng: np.random.Generator, nonzero: np.ndarray, people: int, resamples: int) -> np.ndarray:
    """Sums of `resamples` bootstrap resamples of `people` values, of which only `nonzero`
    are not zero."""
    buyers = nonzero.size
    if buyers == 0:
        return np.zeros(resamples)
    picks = rng.binomial(people, buyers / people, size=resamples)
    amounts, frequency = np.unique(nonzero, return_counts=True)
    if amounts.size * 20 <= buyers:
        # Few distinct amounts (a ticket price times 1-3): how many picks hit each amount is
        # multinomial, the same distribution as drawing the buyers one by one.
        return rng.multinomial(picks, frequency / buyers) @ amounts
    sums = np.zeros(resamples)
    chunk = max(1, _DRAWS_PER_CHUNK // max(1, int(picks.max())))
    for start in range(0, resamples, chunk):
        counts = picks[start : start + chunk]
        chosen = nonzero[rng.integers(0, buyers, size=int(counts.sum()))]
        owner = np.repeat(np.arange(counts.size), counts)
        sums[start : start + chunk] = np.bincount(owner, weights=chosen, minlength=counts.size)
    return sums


def bootstrap_mean_difference(
    nonzero_a: np.ndarray | list[float],
    people_a: int,
    nonzero_b: np.ndarray | list[float],
    people_b: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """mean_a - mean_b over groups of `people_a` and `people_b` people whose non-zero values
    are `nonzero_a` and `nonzero_b` (everyone else has 0), with a percentile bootstrap
    interval of `resamples` resamples from a generator seeded with `seed`."""
    values_a = np.asarray(nonzero_a, dtype=float)
    values_b = np.asarray(nonzero_b, dtype=float)
    if people_a == 0 or people_b == 0:
        return Interval(0.0, -math.inf, math.inf)
    estimate = values_a.sum() / people_a - values_b.sum() / people_b
    rng = np.random.default_rng(seed)
    differences = (
        _resampled_sums(rng, values_a, people_a, resamples) / people_a
        - _resampled_sums(rng, values_b, people_b, resamples) / people_b
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high))


def minimum_detectable_effect(
    treated: int, control: int, baseline: float, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """The smallest uplift of a conversion rate (absolute, e.g. 0.012 = +1.2 points over
    `baseline`) that a two-sided two-proportion test at level `alpha` detects with probability
    `power`, for groups of `treated` and `control` people. None when no uplift up to a rate
    of 100 % is detectable (groups too small)."""
    if treated < 1 or control < 1 or not 0 < baseline < 1:
        return None
    z_alpha = _z(1 - alpha)
    z_power = NormalDist().inv_cdf(power)
    total = treated + control

    def shortfall(uplift: float) -> float:
        raised = baseline + uplift
        pooled = (treated * raised + control * baseline) / total
        null_sd = math.sqrt(pooled * (1 - pooled) * (1 / treated + 1 / control))
        alternative_sd = math.sqrt(raised * (1 - raised) / treated + baseline * (1 - baseline) / control)
        return uplift - (z_alpha * null_sd + z_power * alternative_sd)

    low, high = 0.0, 1 - baseline - 1e-12
    if shortfall(high) < 0:
        return None
    for _ in range(80):
        middle = (low + high) / 2
        if shortfall(middle) < 0:
            low = middle
        else:
            high = middle
    return high
