"""The increment's statistics against published values, and their coverage on seeded simulations."""

from __future__ import annotations

import numpy as np
import pytest

from campaign_lib.reporting.stats import (
    Interval,
    bootstrap_mean_difference,
    minimum_detectable_effect,
    newcombe_interval,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        pytest.param(81, 263, 0.2553, 0.3662, id="newcombe-1998-single-rate"),
        pytest.param(5, 10, 0.2366, 0.7634, id="half"),
        pytest.param(0, 10, 0.0, 0.2775, id="none-of-ten"),
        pytest.param(10, 10, 0.7225, 1.0, id="all-of-ten"),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    interval = wilson_interval(successes, trials)

    assert interval.estimate == pytest.approx(successes / trials)
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
        pytest.param((56, 70), (48, 80), 0.0524, 0.3339, id="example-a"),
        pytest.param((9, 10), (3, 10), 0.1705, 0.8090, id="example-b"),
        pytest.param((5, 56), (0, 29), -0.0381, 0.1926, id="example-c"),
    ],
)
def test_newcombe_hybrid_score_interval_matches_the_paper(a, b, low: float, high: float) -> None:
    interval = newcombe_interval(*a, *b)

    assert interval.estimate == pytest.approx(a[0] / a[1] - b[0] / b[1])
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=5e-5)


def test_no_trials_give_the_widest_interval() -> None:
    assert wilson_interval(0, 0) == Interval(0.0, 0.0, 1.0)


def test_minimum_detectable_effect_matches_the_textbook_sample_size() -> None:
    # 10 % -> 15 % at alpha 0.05 two-sided and power 0.8 needs 686 per group (Fleiss, no
    # continuity correction); so 686 per group detect 5 points.
    assert minimum_detectable_effect(686, 686, 0.10) == pytest.approx(0.05, abs=2e-4)
    # More people detect less; a smaller control group costs power.
    assert minimum_detectable_effect(9000, 1000, 0.02) < minimum_detectable_effect(900, 100, 0.02)
    assert minimum_detectable_effect(5000, 5000, 0.02) < minimum_detectable_effect(9000, 1000, 0.02)
    assert minimum_detectable_effect(3, 1, 0.5) is None
    assert minimum_detectable_effect(1000, 0, 0.02) is None


@pytest.mark.parametrize(
    "spend",
    [
        pytest.param(lambda rng, n: rng.gamma(2.0, 30.0, size=n), id="every-amount-different"),
        pytest.param(lambda rng, n: 25.0 * rng.integers(1, 4, size=n), id="few-distinct-amounts"),
    ],
)
def test_the_bootstrap_is_seeded_and_agrees_with_resampling_every_person(spend) -> None:
    rng = np.random.default_rng(7)
    treated = spend(rng, 60)
    control = spend(rng, 20)

    first = bootstrap_mean_difference(treated, 1000, control, 400, resamples=4000, seed=1)
    again = bootstrap_mean_difference(treated, 1000, control, 400, resamples=4000, seed=1)

    # The textbook bootstrap: draw 1,000 and 400 people with replacement, zeros included.
    everyone_t = np.concatenate([treated, np.zeros(1000 - treated.size)])
    everyone_c = np.concatenate([control, np.zeros(400 - control.size)])
    naive = np.random.default_rng(2)
    differences = [
        naive.choice(everyone_t, everyone_t.size).mean() - naive.choice(everyone_c, everyone_c.size).mean()
        for _ in range(4000)
    ]
    low, high = np.quantile(differences, [0.025, 0.975])
    assert first == again
    assert first.estimate == pytest.approx(treated.sum() / 1000 - control.sum() / 400)
    assert first.low == pytest.approx(low, abs=0.25) and first.high == pytest.approx(high, abs=0.25)


def test_wilson_and_newcombe_cover_the_truth_in_95_percent_of_simulated_experiments() -> None:
    rng = np.random.default_rng(20261122)
    experiments, treated, control = 1000, 1800, 200
    rate_t, rate_c = 0.06, 0.04
    hits_t = rng.binomial(treated, rate_t, size=experiments)
    hits_c = rng.binomial(control, rate_c, size=experiments)

    wilson = []
    for x in hits_t:
        interval = wilson_interval(int(x), treated)
        wilson.append(interval.low <= rate_t <= interval.high)
    newcombe = []
    for x, y in zip(hits_t, hits_c, strict=True):
        interval = newcombe_interval(int(x), treated, int(y), control)
        newcombe.append(interval.low <= rate_t - rate_c <= interval.high)

    assert 0.93 <= np.mean(wilson) <= 0.97
    assert 0.93 <= np.mean(newcombe) <= 0.975


def test_the_revenue_bootstrap_covers_the_true_difference_in_about_95_percent() -> None:
    rng = np.random.default_rng(11)
    experiments, treated, control = 500, 3000, 1000
    # Buyers spend 1-3 tickets at 25: expected revenue per person 0.05*50 vs 0.03*50.
    truth = (0.05 - 0.03) * 50
    covered = 0
    for experiment in range(experiments):
        spend_t = 25.0 * rng.integers(1, 4, size=rng.binomial(treated, 0.05))
        spend_c = 25.0 * rng.integers(1, 4, size=rng.binomial(control, 0.03))
        interval = bootstrap_mean_difference(
            spend_t, treated, spend_c, control, resamples=1000, seed=experiment
        )
        covered += interval.low <= truth <= interval.high

    assert 0.92 <= covered / experiments <= 0.975


def test_a_wilson_interval_always_holds_its_rate() -> None:
    for trials in range(1, 80):
        for successes in range(trials + 1):
            interval = wilson_interval(successes, trials)
            assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0, (successes, trials)
