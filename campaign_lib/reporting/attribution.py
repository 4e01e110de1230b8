"""Attribution: which touches (campaign and channel) earned a conversion, under six models.

A journey is the touches a person got before a conversion (messages sent to them by any
campaign, within a look-back window), oldest first, and the conversion's value. Each model
splits every conversion over the touches of its journey; a touch is named by a label
(this run's channel, e.g. `email`, or `<campaign>/<channel>` for other campaigns), and the
credit of a label is the sum over its touches.

Rule-based models, per conversion:
    last_touch       everything to the last touch
    first_touch      everything to the first touch
    linear           the same share to every touch
    time_decay       weights halving every `half_life_days` before the conversion
    position_based   40 % first, 40 % last, 20 % shared by the touches between
                     (one touch: all of it; two: half each)

Data-driven, over all journeys (converted or not):
    markov           a first-order Markov chain over the labels with the states start,
                     conversion and null; the removal effect of a label is the share of
                     conversions lost when its state leads to null instead. Each conversion
                     is then split over the distinct labels of its journey in proportion to
                     their removal effects, so single-touch journeys keep their whole value
                     (and all six models agree there) while shared journeys follow the data.

The chain's conversion probabilities are solved exactly as an absorbing Markov chain
(fundamental matrix, `numpy.linalg.solve`). ADR 0012 says why the report defaults to
last touch.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MODELS = ("last_touch", "first_touch", "linear", "time_decay", "position_based", "markov")
MODEL_NAMES = {
    "last_touch": "last touch",
    "first_touch": "first touch",
    "linear": "linear",
    "time_decay": "time decay",
    "position_based": "position based (40/20/40)",
    "markov": "data-driven (Markov chain, removal effect)",
}
DEFAULT_MODEL = "last_touch"
DEFAULT_HALF_LIFE_DAYS = 7.0
START, CONVERSION, NULL = "(start)", "(conversion)", "(null)"


@dataclass(frozen=True)
class Touch:
    """One message a person got: its label and how many days before the conversion."""

    label: str
    days_before: float


@dataclass(frozen=True)
class Conversion:
    """A conversion and the touches before it, oldest first."""

    touches: tuple[Touch, ...]
    value: float


@dataclass(frozen=True)
class PathCount:
    """How many people took one path of labels, and how many of them converted."""

    labels: tuple[str, ...]
    conversions: int
    non_conversions: int


@dataclass(frozen=True)
class Credit:
    """What a model attributes to one label: conversions (fractional) and value."""

    conversions: float
    value: float


def _rule_weights(model: str, touches: Sequence[Touch], half_life_days: float) -> list[float]:
    count = len(touches)
    if model == "last_touch":
        return [0.0] * (count - 1) + [1.0]
    if model == "first_touch":
        return [1.0] + [0.0] * (count - 1)
    if model == "linear":
        return [1 / count] * count
    if model == "time_decay":
        raw = [0.5 ** (touch.days_before / half_life_days) for touch in touches]
        return [weight / sum(raw) for weight in raw]
    if model == "position_based":
        if count <= 2:
            return [1 / count] * count
        return [0.4] + [0.2 / (count - 2)] * (count - 2) + [0.4]
    raise ValueError(f"unknown attribution model {model!r}; known: {', '.join(MODELS)}")


def conversion_probability(paths: Iterable[PathCount], removed: str | None = None) -> float:
    """P(conversion) from the start state of the first-order chain fitted to `paths`; with
    `removed`, every transition into that label goes to null instead."""
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in paths:
        total = path.conversions + path.non_conversions
        if total == 0:
            continue
        states = [START, *path.labels]
        for here, there in itertools.pairwise(states):
            counts[here][there] += total
        counts[states[-1]][CONVERSION] += path.conversions
        counts[states[-1]][NULL] += path.non_conversions
    if not counts:
        return 0.0
    transient = sorted(counts, key=lambda s: (s != START, s))
    index = {state: i for i, state in enumerate(transient)}
    q = np.zeros((len(transient), len(transient)))
    to_conversion = np.zeros(len(transient))
    for here, targets in counts.items():
        out = sum(targets.values())
        for there, count in targets.items():
            if there == CONVERSION:
                to_conversion[index[here]] += count / out
            elif there != NULL and there != removed:
                q[index[here], index[there]] += count / out
    # Absorption in `conversion`: solve (I - Q) b = r (b = N r with the fundamental matrix N).
    absorbed = np.linalg.solve(np.eye(len(transient)) - q, to_conversion)
    return float(absorbed[index[START]])


def removal_effects(paths: Sequence[PathCount]) -> dict[str, float]:
    """Each label's removal effect: 1 - P(conversion without it) / P(conversion)."""
    base = conversion_probability(paths)
    labels = sorted({label for path in paths for label in path.labels})
    if base == 0:
        return dict.fromkeys(labels, 0.0)
    return {label: 1 - conversion_probability(paths, removed=label) / base for label in labels}


Journey = tuple[tuple[Touch, ...], int, float]


def _journeys(model: str, conversions: Iterable[Conversion]) -> Iterator[Journey]:
    """(touches, conversions, value) per distinct sequence of labels: every model but time
    decay credits by the labels alone, so tens of thousands of conversions shrink to a few
    journeys. Time decay keeps each conversion (its weights depend on the days)."""
    if model == "time_decay":
        yield from ((c.touches, 1, c.value) for c in conversions if c.touches)
        return
    grouped: dict[tuple[str, ...], list] = {}
    for conversion in conversions:
        if not conversion.touches:
            continue
        key = tuple(touch.label for touch in conversion.touches)
        entry = grouped.setdefault(key, [conversion.touches, 0, 0.0])
        entry[1] += 1
        entry[2] += conversion.value
    yield from (tuple(entry) for entry in grouped.values())


def attribute(
    model: str,
    conversions: Iterable[Conversion],
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    effects: Mapping[str, float] | None = None,
) -> dict[str, Credit]:
    """Credit per label under `model`. `markov` needs the removal effects (`removal_effects`
    over all journeys); conversions without touches are credited to nobody."""
    if model == "markov" and effects is None:
        raise ValueError("the markov model needs the removal effects of all journeys")
    conversions_by_label: dict[str, float] = defaultdict(float)
    value_by_label: dict[str, float] = defaultdict(float)
    for touches, count, value in _journeys(model, conversions):
        if model == "markov":
            labels = sorted({touch.label for touch in touches})
            weights = [max(effects.get(label, 0.0), 0.0) for label in labels]
            total = sum(weights)
            shares = [w / total for w in weights] if total > 0 else [1 / len(labels)] * len(labels)
        else:
            labels = [touch.label for touch in touches]
            shares = _rule_weights(model, touches, half_life_days)
        for label, share in zip(labels, shares, strict=True):
            conversions_by_label[label] += share * count
            value_by_label[label] += share * value
    return {
        label: Credit(conversions_by_label[label], value_by_label[label]) for label in conversions_by_label
    }
