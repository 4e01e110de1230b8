"""Attribution models on small hand-made journeys, and the Markov chain against an independent
computation."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import pytest

from campaign_lib.reporting.attribution import (
    MODELS,
    Conversion,
    PathCount,
    Touch,
    attribute,
    conversion_probability,
    removal_effects,
)

# Anna got an email 10 days, an SMS 3 days and a push 1 day before booking for 100.
ANNA = Conversion((Touch("email", 10.0), Touch("sms", 3.0), Touch("push", 1.0)), 100.0)
# Ben got four touches (two of them email) before spending 50.
BEN = Conversion(
    (Touch("email", 8.0), Touch("other/email", 6.0), Touch("sms", 4.0), Touch("email", 0.0)), 50.0
)
# Cleo got two before spending 20.
CLEO = Conversion((Touch("sms", 2.0), Touch("email", 1.0)), 20.0)


def values(credits) -> dict[str, float]:
    return {label: round(credit.value, 6) for label, credit in credits.items() if round(credit.value, 6)}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param("last_touch", {"push": 100.0, "email": 70.0}, id="last-touch"),
        pytest.param("first_touch", {"email": 150.0, "sms": 20.0}, id="first-touch"),
        pytest.param(
            "linear",
            {"email": 100 / 3 + 25 + 10, "sms": 100 / 3 + 12.5 + 10, "push": 100 / 3, "other/email": 12.5},
            id="linear",
        ),
        pytest.param(
            "position_based",
            # Anna: 40/20/40; Ben: 40 first, 10 + 10 middle, 40 last; Cleo: half each.
            {"email": 40 + 20 + 20 + 10, "sms": 20 + 5 + 10, "push": 40, "other/email": 5},
            id="position-based",
        ),
    ],
)
def test_rule_based_models_split_hand_made_journeys(model: str, expected: dict[str, float]) -> None:
    credits = attribute(model, [ANNA, BEN, CLEO])

    assert values(credits) == pytest.approx(expected)
    assert sum(c.conversions for c in credits.values()) == pytest.approx(3)


def test_time_decay_halves_the_weight_every_half_life() -> None:
    # Half-life 7 days: weights 2^(-10/7), 2^(-3/7), 2^(-1/7) for Anna's touches.
    weights = [2 ** (-10 / 7), 2 ** (-3 / 7), 2 ** (-1 / 7)]
    credits = attribute("time_decay", [ANNA], half_life_days=7)

    for label, weight in zip(("email", "sms", "push"), weights, strict=True):
        assert credits[label].value == pytest.approx(100 * weight / sum(weights))
    assert attribute("time_decay", [CLEO], half_life_days=1)["email"].value == pytest.approx(20 * 2 / 3)


def test_markov_removal_effects_of_a_hand_solved_chain() -> None:
    # start->A 2/3, start->B 1/3; A->B 1/2, A->null 1/2; B->conversion 1.
    # P(conv) = 2/3 * 1/2 + 1/3 = 2/3; without A: 1/3 (effect 1/2); without B: 0 (effect 1).
    paths = [PathCount(("A", "B"), 1, 0), PathCount(("A",), 0, 1), PathCount(("B",), 1, 0)]

    assert conversion_probability(paths) == pytest.approx(2 / 3)
    assert removal_effects(paths) == pytest.approx({"A": 0.5, "B": 1.0})
    # The A-B journey's value is split 1/3 : 2/3, B's alone stays with B.
    credits = attribute(
        "markov",
        [Conversion((Touch("A", 2), Touch("B", 1)), 30.0), Conversion((Touch("B", 1),), 9.0)],
        effects=removal_effects(paths),
    )
    assert values(credits) == pytest.approx({"A": 10.0, "B": 29.0})


def _absorbed_by_iteration(paths: list[PathCount], removed: str | None) -> float:
    """P(conversion) by pushing probability mass through the chain step by step (no matrices)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in paths:
        states = ["start", *path.labels]
        for here, there in itertools.pairwise(states):
            counts[here][there] += path.conversions + path.non_conversions
        counts[states[-1]]["conv"] += path.conversions
        counts[states[-1]]["null"] += path.non_conversions
    mass, converted = {"start": 1.0}, 0.0
    for _ in range(10_000):
        moved: dict[str, float] = defaultdict(float)
        for state, amount in mass.items():
            total = sum(counts[state].values())
            for there, count in counts[state].items():
                share = amount * count / total
                if there == "conv":
                    converted += share
                elif there not in ("null", removed):
                    moved[there] += share
        mass = moved
        if sum(mass.values()) < 1e-15:
            break
    return converted


def test_markov_chain_agrees_with_an_independent_iteration_on_random_journeys_with_loops() -> None:
    rng = random.Random(5)
    labels = ["email", "sms", "push", "other/email"]
    paths = [
        PathCount(
            tuple(rng.choice(labels) for _ in range(rng.randint(1, 5))), rng.randint(0, 3), rng.randint(0, 9)
        )
        for _ in range(60)
    ]
    assert any(len(set(p.labels)) < len(p.labels) for p in paths)  # revisits make loops

    for removed in [None, *labels]:
        assert conversion_probability(paths, removed) == pytest.approx(
            _absorbed_by_iteration(paths, removed), abs=1e-9
        )


def test_all_models_agree_on_single_touch_journeys() -> None:
    journeys = [
        Conversion((Touch("email", 2.0),), 40.0),
        Conversion((Touch("sms", 5.0),), 25.0),
        Conversion((Touch("email", 1.0),), 10.0),
        Conversion((Touch("push", 0.5),), 5.0),
    ]
    paths = [PathCount(("email",), 2, 30), PathCount(("sms",), 1, 20), PathCount(("push",), 1, 9)]
    effects = removal_effects(paths)

    results = {model: values(attribute(model, journeys, effects=effects)) for model in MODELS}

    assert all(result == {"email": 50.0, "sms": 25.0, "push": 5.0} for result in results.values()), results


def test_markov_needs_the_removal_effects_and_unknown_models_are_refused() -> None:
    with pytest.raises(ValueError, match="removal effects"):
        attribute("markov", [ANNA])
    with pytest.raises(ValueError, match="unknown attribution model 'u_shaped'"):
        attribute("u_shaped", [ANNA])
