"""Before a campaign runs: how big an effect can its control group show at all?

`kms campaign validate` prints, for each definition, the minimum detectable effect (MDE)
of its expected audience and control share: the smallest uplift of the conversion rate a
two-sided test at 5 % finds with 80 % power. The expected audience is the size of the
campaign's latest run (audience plus control); a campaign that never ran is previewed
(its funnel runs and writes nothing). The base rate is the control group's conversion rate
in the campaign's latest rendered report, else 2 %.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from campaign_lib.campaign.definition import Campaign
from campaign_lib.errors import DatabaseError
from campaign_lib.reporting.metrics import DEFAULT_BASELINE_RATE
from campaign_lib.reporting.stats import minimum_detectable_effect
from campaign_lib.sqlfiles import queries


@dataclass(frozen=True)
class Detection:
    """The minimum detectable effect of a campaign and what it assumed."""

    people: int
    control_share: float
    baseline: float
    baseline_source: str
    audience_source: str
    effect: float | None

    def line(self) -> str:
        """One line for `kms campaign validate`."""
        head = "  minimum detectable effect:"
        treated = round(self.people * (1 - self.control_share))
        assumed = (
            f"{self.people:,} people ({self.audience_source}), control share {self.control_share:.0%}, "
            f"base rate {self.baseline:.1%} ({self.baseline_source})"
        )
        if self.control_share == 0:
            return f"{head} none, no control group (control_share 0): no increment is measured"
        if self.people == 0:
            return f"{head} unknown, the selection finds nobody now ({self.audience_source})"
        if self.effect is None:
            return f"{head} none, the groups are too small ({assumed}; {treated:,} treated)"
        return f"{head} +{100 * self.effect:.2f} points ({assumed})"


def historical_baseline(campaign_name: str, reports: Path) -> float | None:
    """The control group's conversion rate in the campaign's newest rendered report, if any."""
    newest = None
    for path in (reports / campaign_name).glob("run_*.json"):
        summary = json.loads(path.read_text(encoding="utf-8"))
        if summary["control_people"] and (
            newest is None or summary["campaign_run_id"] > newest["campaign_run_id"]
        ):
            newest = summary
    return newest["control_converters"] / newest["control_people"] if newest else None


def expected_detection(engine: Engine, campaign: Campaign, reports: Path) -> Detection:
    """The MDE of `campaign` for its latest run's size (or a preview's) and its control share."""
    from campaign_lib.campaign.runs import preview

    try:
        with engine.connect() as conn:
            last = conn.execute(
                queries("reporting.sql")["last_audience"], {"campaign_name": campaign.name}
            ).first()
        if last is not None:
            people, audience_source = last.audience_count + (last.control_count or 0), "its latest run"
        else:
            waterfall = preview(engine, campaign.selection.name, None, campaign.name)
            people, audience_source = waterfall.audience + waterfall.control, "a preview now"
    except DBAPIError as exc:
        raise DatabaseError(f"campaign database: {str(exc.orig).splitlines()[0]}") from exc
    history = historical_baseline(campaign.name, reports)
    baseline = history if history and 0 < history < 1 else DEFAULT_BASELINE_RATE
    treated = round(people * (1 - campaign.control_share))
    return Detection(
        people=people,
        control_share=campaign.control_share,
        baseline=baseline,
        baseline_source="its latest report's control group" if history else "default",
        audience_source=audience_source,
        effect=minimum_detectable_effect(treated, people - treated, baseline),
    )
