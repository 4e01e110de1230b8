"""The report's charts, drawn with matplotlib's object API (no pyplot, no global figure state).

Each function returns a `Figure`; `svg` turns one into an inline SVG element for the HTML
report (text kept as text, ids salted so the output is the same on every run), and the PDF
puts the same figures on its pages.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from campaign_lib.campaign.funnel import WaterfallStep
from campaign_lib.reporting.metrics import CampaignReport
from campaign_lib.reporting.responses import ChannelFunnel

TREATED, CONTROL = "#1f6fb2", "#9a9a9a"
STAGES = ("sent", "delivered", "opened", "clicked", "converted")
P = ParamSpec("P")
R = TypeVar("R")
_STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"}


def svg(figure: Figure) -> str:
    """The figure as an `<svg>` element to put inline into HTML."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "kms-report", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw under the report's style (rc settings are read when artists are made)."""

    @functools.wraps(draw)
    def styled(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(_STYLE):
            return draw(*args, **kwargs)

    return styled


@_styled
def waterfall_chart(rows: tuple[WaterfallStep, ...]) -> Figure:
    """How the selection narrowed down to the audience, step by step."""
    figure = _figure(7.5, 0.45 * max(len(rows), 3) + 0.8)
    axes = figure.add_subplot()
    names = [row.step.replace("_", " ") for row in rows][::-1]
    kept = [row.count_out for row in rows][::-1]
    removed = [row.removed for row in rows][::-1]
    axes.barh(names, kept, color=TREATED, label="remaining")
    axes.barh(names, removed, left=kept, color="#f0b27a", label="removed at this step")
    for y, (count, gone) in enumerate(zip(kept, removed, strict=True)):
        axes.annotate(
            f"{count:,}" + (f"  (-{gone:,})" if gone else ""),
            (count + gone, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
        )
    axes.set_xlabel("people")
    axes.set_title("Selection waterfall")
    axes.legend(loc="lower right", frameon=False)
    axes.margins(x=0.25)
    return figure


@_styled
def funnel_chart(funnel: tuple[ChannelFunnel, ...]) -> Figure:
    """Sent → delivered → opened → clicked → converted, per channel, as shares of sent."""
    figure = _figure(7.5, 3.2)
    axes = figure.add_subplot()
    width = 0.8 / max(len(funnel), 1)
    for index, channel in enumerate(funnel):
        counts = [getattr(channel, stage) for stage in STAGES]
        base = channel.sent or 1
        positions = [stage + (index - (len(funnel) - 1) / 2) * width for stage in range(len(STAGES))]
        bars = axes.bar(positions, [100 * c / base for c in counts], width, label=channel.channel)
        axes.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=7, padding=2)
    axes.set_xticks(range(len(STAGES)), [stage.capitalize() for stage in STAGES])
    axes.set_ylabel("% of messages sent")
    axes.set_ylim(0, 115)
    axes.set_title("Sent → delivered → opened → clicked → converted, per channel")
    if funnel:
        axes.legend(frameon=False)
    else:
        axes.text(2, 50, "no message was sent", ha="center", color="#666")
    return figure


@_styled
def revenue_chart(report: CampaignReport) -> Figure:
    """Cumulative revenue per person over the response window, treated against control."""
    figure = _figure(7.5, 3.2)
    draw_revenue(figure.add_subplot(), report)
    return figure


@_styled
def draw_revenue(axes: Axes, report: CampaignReport) -> None:
    """The revenue chart on `axes` (also the PDF's first page draws it)."""
    responses = report.responses
    days = list(range(responses.response_window_days + 2))
    people = {False: report.increment.treated_people, True: report.increment.control_people}
    for is_control, colour, label in ((False, TREATED, "got the campaign"), (True, CONTROL, "control group")):
        per_day = responses.revenue_by_day[is_control]
        total, cumulative = 0.0, []
        for day in days:
            total += per_day.get(day - 1, 0.0)
            cumulative.append(total / people[is_control] if people[is_control] else 0.0)
        axes.step(days, cumulative, where="post", color=colour, label=label, linewidth=2)
    if report.window_is_open:
        axes.axvline(report.window_day, color="#444", linestyle=":", linewidth=1)
        axes.annotate("today", (report.window_day, 0), xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("days after the first message")
    axes.set_ylabel(f"revenue per person ({responses.currency})")
    axes.set_title("Revenue per person over the response window")
    axes.legend(frameon=False, loc="upper left")


@_styled
def channels_chart(report: CampaignReport) -> Figure:
    """Channels side by side: cost against attributed revenue, and conversion rates."""
    figure = _figure(7.5, 3.2)
    money, rates = figure.subplots(1, 2)
    names = [c.channel for c in report.channels]
    positions = range(len(names))
    money.bar(
        [p - 0.2 for p in positions], [c.cost for c in report.channels], 0.4, label="cost", color="#c0392b"
    )
    money.bar(
        [p + 0.2 for p in positions],
        [c.attributed_revenue for c in report.channels],
        0.4,
        label="attributed revenue",
        color="#27ae60",
    )
    money.set_xticks(list(positions), names)
    money.set_ylabel(report.responses.currency)
    money.set_title("Cost and revenue per channel")
    money.legend(frameon=False, fontsize=7)
    for offset, colour, label, pick in (
        (-0.2, TREATED, "got the campaign", lambda c: c.increment.treated_rate),
        (0.2, CONTROL, "control group", lambda c: c.increment.control_rate),
    ):
        intervals = [pick(c) for c in report.channels]
        estimates = [100 * i.estimate for i in intervals]
        errors = [
            [100 * (i.estimate - i.low) for i in intervals],
            [100 * (i.high - i.estimate) for i in intervals],
        ]
        rates.bar(
            [p + offset for p in positions], estimates, 0.4, yerr=errors, capsize=3, color=colour, label=label
        )
    rates.set_xticks(list(positions), names)
    rates.set_ylabel("% converted (95 % interval)")
    rates.set_title("Conversion rate per channel")
    rates.legend(frameon=False, fontsize=7)
    return figure


def all_charts(report: CampaignReport) -> dict[str, Figure]:
    """The report's charts by name, in reading order."""
    return {
        "revenue": revenue_chart(report),
        "channels": channels_chart(report),
        "funnel": funnel_chart(report.responses.funnel),
        "waterfall": waterfall_chart(report.responses.waterfall),
    }
