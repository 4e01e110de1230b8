"""The plain words of a report: numbers formatted for people, and the headline sentences.

The HTML report, its PDF and the email's text part all say the same sentences, made here
once. They are written for an executive: what it cost, what it earned, and whether it
earned more than doing nothing, with "not significant" said plainly when the interval of
an effect includes zero.
"""

from __future__ import annotations

import math

from campaign_lib.reporting.metrics import CampaignReport
from campaign_lib.reporting.stats import Interval


def money(value: float, currency: str) -> str:
    """`EUR 1,234` (cents shown only below 100)."""
    if not math.isfinite(value):
        return "n/a"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    shown = f"{amount:,.2f}" if amount < 100 else f"{amount:,.0f}"
    return f"{sign}{currency} {shown}"


def percent(rate: float | None, digits: int = 1) -> str:
    """0.0412 → `4.1 %`."""
    return "n/a" if rate is None or not math.isfinite(rate) else f"{100 * rate:,.{digits}f} %"


def points(difference: float, digits: int = 2) -> str:
    """A difference of two rates in percentage points, signed: 0.021 → `+2.10 points`."""
    return f"{100 * difference:+,.{digits}f} points"


def count(value: float) -> str:
    return f"{value:,.0f}"


def interval_text(interval: Interval, shown) -> str:
    """`+1.20 points to +2.70 points` with the given formatter."""
    return f"{shown(interval.low)} to {shown(interval.high)}"


def headline(report: CampaignReport) -> list[str]:
    """The report's first sentences, most important first."""
    currency = report.responses.currency
    cur = lambda value: money(value, currency)  # noqa: E731 - a formatter passed around
    inc = report.increment
    sentences = []
    if report.window_is_open:
        sentences.append(
            f"The response window is still open (day {report.window_day} of "
            f"{report.responses.response_window_days}): these figures are provisional."
        )
    sentences.append(
        f"The campaign cost {cur(report.cost)} ({cur(report.cost - report.fixed_cost)} for "
        f"{count(sum(f.sent for f in report.responses.funnel))} messages and {cur(report.fixed_cost)} fixed)."
    )
    roi = (
        f"a return on investment of {percent(report.roi, 0)}"
        if report.roi is not None
        else "no ROI (no cost)"
    )
    sentences.append(
        f"It brought in {cur(report.attributed_revenue)} of revenue credited to it "
        f"({report.model_name} attribution): {roi}."
    )
    if inc.control_people == 0:
        sentences.append(
            "There was no control group, so whether it earned more than doing nothing is unknown."
        )
        return sentences
    verdict = (
        "the campaign made a real difference."
        if inc.significant and inc.uplift.estimate > 0
        else "the campaign did worse than doing nothing."
        if inc.significant
        else "this difference is NOT significant: it may be chance."
    )
    sentences.append(
        f"{percent(inc.treated_rate.estimate)} of the people who got it bought "
        f"{'the offer' if report.responses.offer_sku else 'something'}, against "
        f"{percent(inc.control_rate.estimate)} of the control group who got nothing: "
        f"{points(inc.uplift.estimate)} (95 % interval {interval_text(inc.uplift, points)}); {verdict}"
    )
    extra = (
        f"Against doing nothing it earned {cur(report.incremental_revenue.estimate)} more "
        f"(95 % interval {interval_text(report.incremental_revenue, cur)}) from about "
        f"{count(report.incremental_conversions.estimate)} extra buyers"
    )
    if report.revenue_significant:
        roi_text = (
            f"; after its cost that is an incremental ROI of {percent(report.incremental_roi.estimate, 0)}."
            if report.incremental_roi
            else "."
        )
        sentences.append(extra + roi_text)
    else:
        sentences.append(extra + ": NOT significant, the interval includes zero.")
    return sentences


def _differences(report: CampaignReport) -> dict[str, int]:
    """+1 / -1 / 0 per measure: significantly higher, lower, or not significant."""
    inc = report.increment

    def sign(significant: bool, estimate: float) -> int:
        return 0 if not significant else (1 if estimate > 0 else -1)

    return {
        "conversion rate": sign(inc.significant, inc.uplift.estimate),
        "revenue per person": sign(report.revenue_significant, report.incremental_revenue.estimate),
    }


def earned_more_than_nothing(report: CampaignReport) -> str:
    """The short verdict of the headline box: yes, probably, not shown, no, or unknown.

    yes: conversion rate and revenue per person both significantly above the control
    group's; probably: one of them is, the other difference is not significant."""
    if report.increment.control_people == 0:
        return "unknown (no control group)"
    signs = list(_differences(report).values())
    if all(s > 0 for s in signs):
        return "yes"
    if any(s < 0 for s in signs) and not any(s > 0 for s in signs):
        return "no, less"
    if any(s > 0 for s in signs):
        return "probably"
    return "not shown (not significant)"


def verdict_reason(report: CampaignReport) -> str:
    """Why the verdict is what it is, in one sentence."""
    if report.increment.control_people == 0:
        return "Without a control group the campaign cannot be compared with doing nothing."
    differences = _differences(report)
    higher = [name for name, s in differences.items() if s > 0]
    lower = [name for name, s in differences.items() if s < 0]
    unclear = [name for name, s in differences.items() if s == 0]
    parts = []
    if higher:
        parts.append(f"{' and '.join(higher)} significantly higher than in the control group")
    if lower:
        parts.append(f"{' and '.join(lower)} significantly lower than in the control group")
    if unclear:
        parts.append(f"{' and '.join(unclear)}: difference not significant")
    sentence = "; ".join(parts).capitalize() + "."
    buyers = report.increment.control_converters
    if buyers < 10:
        who = "person" if buyers == 1 else "people"
        sentence += f" Only {buyers} {who} of the control group bought: treat the intervals with care."
    return sentence


def detection_sentence(report: CampaignReport) -> str:
    """What size of effect this run could have detected at all."""
    mde = report.minimum_detectable_effect
    if report.increment.control_people == 0:
        return "Without a control group no uplift can be measured; give the campaign a control_share."
    if mde is None:
        return "The groups are too small to detect any uplift reliably."
    return (
        f"With {count(report.increment.treated_people)} people targeted and "
        f"{count(report.increment.control_people)} in the control group, the smallest uplift this "
        f"comparison detects reliably (5 % significance, 80 % power) is {points(mde)} on a "
        f"{percent(report.mde_baseline)} base rate."
    )
