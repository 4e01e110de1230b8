"""The report's figures: cost, attributed revenue, ROI, and the increment over the control group.

`compute_report(responses, model=...)` turns a run's responses into a `CampaignReport`:

- cost = per channel the definition's `costs.per_message` times the billed units (SMS:
  segments) plus `costs.fixed`;
- attributed revenue = the revenue the chosen attribution model credits to this run's
  touches; ROI = (attributed revenue - cost) / cost;
- the increment (intention to treat: every treated audience member against the control
  group): conversion rates with Wilson intervals and their difference with Newcombe's
  interval; revenue per person and its difference with a seeded bootstrap interval;
  incremental conversions and revenue (the per-person difference times the treated
  people) and incremental ROI = (incremental revenue - cost) / cost. An interval that
  includes zero is reported as not significant;
- the minimum detectable effect of the run's group sizes at the control group's rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from campaign_lib.errors import ConfigError
from campaign_lib.reporting.attribution import (
    DEFAULT_HALF_LIFE_DAYS,
    DEFAULT_MODEL,
    MODEL_NAMES,
    MODELS,
    Credit,
    attribute,
    removal_effects,
)
from campaign_lib.reporting.responses import RunResponses
from campaign_lib.reporting.stats import (
    Interval,
    bootstrap_mean_difference,
    minimum_detectable_effect,
    newcombe_interval,
    wilson_interval,
)

DEFAULT_BASELINE_RATE = 0.02


@dataclass(frozen=True)
class Increment:
    """Treated against control for one set of people (the whole run or one channel)."""

    treated_people: int
    control_people: int
    treated_converters: int
    control_converters: int
    treated_rate: Interval
    control_rate: Interval
    uplift: Interval  # treated rate - control rate (Newcombe)

    @property
    def significant(self) -> bool:
        return self.treated_people > 0 and self.control_people > 0 and not self.uplift.includes_zero


@dataclass(frozen=True)
class ChannelResult:
    channel: str
    cost: float
    attributed_revenue: float
    roi: float | None
    increment: Increment


@dataclass(frozen=True)
class CampaignReport:
    """Every figure of one run's report."""

    responses: RunResponses
    model: str
    half_life_days: float
    cost: float
    fixed_cost: float
    attributed_revenue: float
    roi: float | None
    increment: Increment
    treated_revenue_per_person: float
    control_revenue_per_person: float
    revenue_per_person_uplift: Interval  # bootstrap
    incremental_conversions: Interval
    incremental_revenue: Interval
    incremental_roi: Interval | None
    channels: tuple[ChannelResult, ...]
    model_comparison: dict[str, dict[str, Credit]]
    minimum_detectable_effect: float | None
    mde_baseline: float
    computed_at: datetime

    @property
    def model_name(self) -> str:
        return MODEL_NAMES[self.model]

    @property
    def revenue_significant(self) -> bool:
        return not self.revenue_per_person_uplift.includes_zero

    @property
    def window_is_open(self) -> bool:
        return self.computed_at < self.responses.window_closes_at

    @property
    def window_day(self) -> int:
        """Days since the first send (0 on its day), capped at the window's length."""
        elapsed = (self.computed_at - self.responses.window_opens_at).days
        return max(0, min(elapsed, self.responses.response_window_days))


def report_model(environ: dict[str, str] | None = None) -> str:
    """The attribution model of the reports: KMS_ATTRIBUTION_MODEL, default last touch."""
    env = os.environ if environ is None else environ
    model = env.get("KMS_ATTRIBUTION_MODEL") or DEFAULT_MODEL
    if model not in MODELS:
        raise ConfigError(f"KMS_ATTRIBUTION_MODEL must be one of {', '.join(MODELS)}, not {model!r}")
    return model


def _increment(treated: tuple[int, int], control: tuple[int, int]) -> Increment:
    (t_people, t_conv), (c_people, c_conv) = treated, control
    return Increment(
        treated_people=t_people,
        control_people=c_people,
        treated_converters=t_conv,
        control_converters=c_conv,
        treated_rate=wilson_interval(t_conv, t_people),
        control_rate=wilson_interval(c_conv, c_people),
        uplift=newcombe_interval(t_conv, t_people, c_conv, c_people),
    )


def _ratio(gain: float, cost: float) -> float | None:
    return (gain - cost) / cost if cost > 0 else None


def channel_costs(responses: RunResponses) -> dict[str, float]:
    """Cost per channel: the definition's price per message (SMS: per segment) x billed units."""
    prices = responses.definition.get("costs", {}).get("per_message", {})
    return {
        f.channel: float(Decimal(str(prices.get(f.channel, 0))) * f.billed_units) for f in responses.funnel
    }


def compute_report(
    responses: RunResponses,
    *,
    model: str | None = None,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    baseline_rate: float | None = None,
    now: datetime | None = None,
) -> CampaignReport:
    """The figures of a run's report under attribution `model` (default: report_model()).

    `baseline_rate` is the conversion rate the minimum detectable effect assumes for the
    control group (default: the control group's observed rate, else 2 %).
    """
    chosen = model or report_model()
    if chosen not in MODELS:
        raise ConfigError(f"attribution model must be one of {', '.join(MODELS)}, not {chosen!r}")
    if chosen == "markov" and not responses.paths and responses.conversions:
        raise ConfigError("the markov model needs the paths of all journeys (load_responses(paths=True))")
    # Without the paths (read only for the Markov model) the comparison shows the rule-based models.
    effects = removal_effects(responses.paths) if responses.paths else None
    comparison = {
        name: attribute(name, responses.conversions, half_life_days=half_life_days, effects=effects)
        for name in MODELS
        if name != "markov" or effects is not None
    }
    credits = comparison.get(chosen, {})

    by_channel_cost = channel_costs(responses)
    fixed = float(Decimal(str(responses.definition.get("costs", {}).get("fixed", 0))))
    cost = sum(by_channel_cost.values()) + fixed

    totals: dict[bool, list[int]] = {False: [0, 0], True: [0, 0]}
    revenue: dict[bool, float] = {False: 0.0, True: 0.0}
    for outcome in responses.outcomes:
        totals[outcome.is_control][0] += outcome.people
        totals[outcome.is_control][1] += outcome.converters
        revenue[outcome.is_control] += outcome.revenue
    increment = _increment(tuple(totals[False]), tuple(totals[True]))
    t_people, c_people = totals[False][0], totals[True][0]

    revenue_uplift = bootstrap_mean_difference(
        responses.buyer_revenue_treated, t_people, responses.buyer_revenue_control, c_people
    )
    incremental_revenue = revenue_uplift.scaled(t_people)
    incremental_roi = None
    if cost > 0:
        incremental_roi = Interval(
            (incremental_revenue.estimate - cost) / cost,
            (incremental_revenue.low - cost) / cost,
            (incremental_revenue.high - cost) / cost,
        )
    own_labels = {f.channel for f in responses.funnel} | {o.channel for o in responses.outcomes}
    attributed = sum(credit.value for label, credit in credits.items() if label in own_labels)

    channels = []
    for channel in sorted({o.channel for o in responses.outcomes if not o.is_control}):
        group = {o.is_control: (o.people, o.converters) for o in responses.outcomes if o.channel == channel}
        channel_revenue = credits[channel].value if channel in credits else 0.0
        channel_cost = by_channel_cost.get(channel, 0.0)
        channels.append(
            ChannelResult(
                channel=channel,
                cost=channel_cost,
                attributed_revenue=channel_revenue,
                roi=_ratio(channel_revenue, channel_cost),
                increment=_increment(group.get(False, (0, 0)), group.get(True, (0, 0))),
            )
        )

    control_rate = increment.control_rate.estimate
    baseline = baseline_rate or (control_rate if 0 < control_rate < 1 else DEFAULT_BASELINE_RATE)
    return CampaignReport(
        responses=responses,
        model=chosen,
        half_life_days=half_life_days,
        cost=cost,
        fixed_cost=fixed,
        attributed_revenue=attributed,
        roi=_ratio(attributed, cost),
        increment=increment,
        treated_revenue_per_person=revenue[False] / t_people if t_people else 0.0,
        control_revenue_per_person=revenue[True] / c_people if c_people else 0.0,
        revenue_per_person_uplift=revenue_uplift,
        incremental_conversions=increment.uplift.scaled(t_people),
        incremental_revenue=incremental_revenue,
        incremental_roi=incremental_roi,
        channels=tuple(channels),
        model_comparison=comparison,
        minimum_detectable_effect=minimum_detectable_effect(t_people, c_people, baseline),
        mde_baseline=baseline,
        computed_at=now or datetime.now(UTC),
    )
