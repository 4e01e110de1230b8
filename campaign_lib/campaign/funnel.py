"""The eligibility funnel: from every contact to the audience of one campaign run.

    universe → selection → channel eligibility → global suppression → contact pressure →
    one per household → already bought the offer → global hold-out → control group →
    A/B cells → size cap

Each step is recorded as a waterfall row (count in, removed, count out, reason). The work is
set-based (sql/funnel.sql): the selection fills a temporary table
(`campaign_lib.selection.materialize`), one statement computes for every selected contact
the step it dropped out at, its channel and its cell, and one aggregate gives the counts.
The selection and the funnel each run in a READ ONLY transaction with a statement timeout
(`campaign_lib.selection.read_only`), so neither a SQL-file selection nor the funnel can
change data; the working tables stay in the session for the snapshot to copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Connection

from campaign_lib.campaign.definition import Campaign
from campaign_lib.campaign.settings import CampaignSettings
from campaign_lib.sqlfiles import queries

# The steps in funnel order; position = the number compute_funnel writes into dropped_at.
STEPS = (
    "universe",
    "selection",
    "channel_eligibility",
    "suppression",
    "contact_pressure",
    "one_per_household",
    "already_bought",
    "global_holdout",
    "control_group",
    "ab_cells",
    "size_cap",
)
CONTROL = "control"
SELECTION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FunnelSpec:
    """What the funnel needs to know of a campaign (a definition, an ad-hoc run or a preview)."""

    campaign: str
    channels: tuple[str, ...]
    purpose: str
    one_per_household: bool = False
    offer_sku: str | None = None
    bought_within_days: int | None = None
    control_share: float = 0.0
    cells: Mapping[str, float] = field(default_factory=lambda: {"main": 1.0})
    pressure_window_days: int = 7
    max_per_channel: int = 2
    max_total: int = 3
    holdout_share: float = 0.0
    size_cap: int | None = None
    cap_by: Literal["random", "score"] = "random"
    cap_seed: str | None = None

    @classmethod
    def from_campaign(cls, campaign: Campaign, settings: CampaignSettings) -> FunnelSpec:
        """The funnel of a campaign definition; its pressure limits override the settings'."""
        pressure = campaign.pressure
        return cls(
            campaign=campaign.name,
            channels=tuple(campaign.channels),
            purpose=campaign.purpose,
            one_per_household=campaign.one_per_household,
            offer_sku=campaign.offer.sku if campaign.offer else None,
            bought_within_days=campaign.offer.already_bought_within_days if campaign.offer else None,
            control_share=campaign.control_share,
            cells=campaign.cell_weights,
            pressure_window_days=pressure.window_days or settings.pressure_window_days,
            max_per_channel=pressure.max_per_channel or settings.pressure_max_per_channel,
            max_total=pressure.max_total or settings.pressure_max_total,
            holdout_share=settings.global_holdout_share,
            size_cap=campaign.size_cap.limit if campaign.size_cap else None,
            cap_by=campaign.size_cap.by if campaign.size_cap else "random",
            cap_seed=campaign.size_cap.seed if campaign.size_cap else None,
        )

    def parameters(self, as_of: datetime) -> dict[str, object]:
        """The bound parameters of compute_funnel."""
        total = sum(self.cells.values())
        names = list(self.cells)
        lower_bounds = [sum(list(self.cells.values())[:i]) / total for i in range(len(names))]
        cap_control = None
        if self.size_cap is not None:
            cap_control = math.floor(self.size_cap * self.control_share / (1 - self.control_share) + 0.5)
        return {
            "campaign": self.campaign,
            "channels": list(self.channels),
            "purpose": self.purpose,
            "as_of": as_of,
            "pressure_window_days": self.pressure_window_days,
            "max_per_channel": self.max_per_channel,
            "max_total": self.max_total,
            "one_per_household": self.one_per_household,
            "offer_sku": self.offer_sku,
            "bought_within_days": self.bought_within_days,
            "holdout_share": self.holdout_share,
            "control_share": self.control_share,
            "cell_names": names,
            "cell_lower_bounds": lower_bounds,
            "with_score": self.cap_by == "score",
            "cap_by_score": self.cap_by == "score",
            "cap_seed": self.cap_seed or self.campaign,
            "cap_target": self.size_cap,
            "cap_control": cap_control,
        }

    def reasons(self, selection_name: str) -> dict[str, str]:
        """Why each step removes people, in the campaign manager's words."""
        cells = ", ".join(f"{name} {weight:g}" for name, weight in self.cells.items())
        return {
            "universe": "not an active contact (anonymous, merged into another or erased)",
            "selection": f"not in selection {selection_name}",
            "channel_eligibility": (
                f"no address with {self.purpose} consent on any of {', '.join(self.channels)}"
            ),
            "suppression": "suppressed (unsubscribe, hard bounce, complaint, erasure or blocklist)",
            "contact_pressure": (
                f"contact pressure: {self.max_per_channel} per channel or {self.max_total} in total "
                f"within {self.pressure_window_days} days"
            ),
            "one_per_household": (
                "another member of the household gets it" if self.one_per_household else "not asked for"
            ),
            "already_bought": (
                f"already bought {self.offer_sku}" if self.offer_sku else "no offered product"
            ),
            "global_holdout": (
                f"global hold-out ({self.holdout_share:.1%})" if self.holdout_share else "no global hold-out"
            ),
            "control_group": f"control group ({self.control_share:.0%}), kept in the snapshot, not contacted",
            "ab_cells": f"split into cells by weight ({cells}); nobody removed",
            "size_cap": (
                f"size cap {self.size_cap:,} by {self.cap_by}" if self.size_cap is not None else "no size cap"
            ),
        }


@dataclass(frozen=True)
class WaterfallStep:
    position: int
    step: str
    count_in: int
    removed: int
    count_out: int
    reason: str
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Waterfall:
    """The funnel's outcome: its steps, and the audience by channel and cell."""

    steps: tuple[WaterfallStep, ...]
    by_channel: dict[str, int]
    by_cell: dict[str, int]

    @classmethod
    def from_steps(cls, steps: Sequence[WaterfallStep]) -> Waterfall:
        """A waterfall read back from its stored steps (the last one carries the breakdown)."""
        last = steps[-1].detail
        return cls(steps=tuple(steps), by_channel=dict(last["by_channel"]), by_cell=dict(last["by_cell"]))

    @property
    def audience(self) -> int:
        """People to contact (control group not counted)."""
        return self.steps[-1].count_out

    @property
    def control(self) -> int:
        return self.by_cell.get(CONTROL, 0)

    def as_text(self) -> str:
        """The waterfall as a fixed-width table for logs and the terminal."""
        lines = [f"{'#':>2}  {'step':<20} {'in':>10} {'removed':>10} {'out':>10}  reason"]
        for s in self.steps:
            lines.append(
                f"{s.position:>2}  {s.step:<20} {s.count_in:>10,} {s.removed:>10,} {s.count_out:>10,}"
                f"  {s.reason}"
            )
        lines.append(f"audience {self.audience:,} + control {self.control:,}; {_breakdown(self)}")
        return "\n".join(lines)

    def as_markdown(self) -> str:
        """The waterfall as a Markdown table (the run's note, the approval request)."""
        lines = ["| # | step | in | removed | out | reason |", "|--:|---|--:|--:|--:|---|"]
        for s in self.steps:
            lines.append(
                f"| {s.position} | {s.step} | {s.count_in:,} | {s.removed:,} | {s.count_out:,} | {s.reason} |"
            )
        lines.append("")
        lines.append(f"**audience {self.audience:,}** + control {self.control:,}; {_breakdown(self)}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (XCom, asset event extra)."""
        return {
            "steps": [s.__dict__ for s in self.steps],
            "audience": self.audience,
            "control": self.control,
            "by_channel": self.by_channel,
            "by_cell": self.by_cell,
        }


def _breakdown(waterfall: Waterfall) -> str:
    channels = ", ".join(f"{k} {v:,}" for k, v in sorted(waterfall.by_channel.items())) or "none"
    cells = ", ".join(f"{k} {v:,}" for k, v in sorted(waterfall.by_cell.items())) or "none"
    return f"by channel: {channels}; by cell: {cells}"


def run_funnel(
    conn: Connection,
    spec: FunnelSpec,
    selection,
    params: Mapping[str, object] | None,
    as_of: datetime,
) -> Waterfall:
    """Run the funnel for `selection` (a campaign_lib.selection.Selection) with `params`.

    `conn` must not be in a transaction. Leaves the session's temporary table
    pg_temp.funnel_contact filled (every selected contact, `dropped_at` null for the
    audience) for `campaign_lib.campaign.snapshot` to copy; `drop_work_tables` removes it.
    Returns the waterfall.
    """
    from campaign_lib.selection import materialize, read_only

    sql = queries("funnel.sql")
    materialize(conn, selection, params, as_of=as_of, timeout_s=SELECTION_TIMEOUT_S)
    with conn.begin():
        conn.execute(sql["create_work_tables"])
        conn.execute(sql["analyze_selected"])
    with read_only(conn, timeout_s=SELECTION_TIMEOUT_S) as ro:
        ro.execute(sql["compute_funnel"], spec.parameters(as_of))
        contacts, active = ro.execute(sql["universe"]).one()
        outcome = ro.execute(sql["outcome"]).all()
    return build_waterfall(spec, selection.name, contacts, active, outcome)


def drop_work_tables(conn: Connection) -> None:
    """Remove the funnel's temporary tables from the session (pooled connections live on)."""
    with conn.begin():
        conn.execute(queries("funnel.sql")["drop_work_tables"])


def build_waterfall(
    spec: FunnelSpec,
    selection_name: str,
    contacts: int,
    active: int,
    outcome: Sequence[tuple[int | None, str | None, str | None, int]],
) -> Waterfall:
    """The waterfall from the universe counts and the (dropped_at, cell, channel, contacts) rows."""
    removed_at = dict.fromkeys(range(1, len(STEPS) + 1), 0)
    by_channel: dict[str, int] = {}
    by_cell: dict[str, int] = {}
    selected = 0
    control_kept = 0
    control_capped = 0
    for dropped_at, cell, channel, count in outcome:
        selected += count
        if dropped_at == STEPS.index("size_cap") + 1 and cell == CONTROL:
            control_capped += count
        elif dropped_at is not None:
            removed_at[dropped_at] += count
        elif cell == CONTROL:
            control_kept += count
            by_cell[CONTROL] = by_cell.get(CONTROL, 0) + count
        else:
            by_cell[cell] = by_cell.get(cell, 0) + count
            by_channel[channel] = by_channel.get(channel, 0) + count
    removed_at[STEPS.index("universe") + 1] = contacts - active
    removed_at[STEPS.index("selection") + 1] = active - selected
    removed_at[STEPS.index("control_group") + 1] = control_kept + control_capped
    reasons = spec.reasons(selection_name)
    # The last step carries the breakdown, so a stored waterfall is complete on its own.
    details: dict[str, dict[str, object]] = {
        "control_group": {"share": spec.control_share},
        "size_cap": {"control_removed": control_capped, "by_channel": by_channel, "by_cell": by_cell},
    }
    steps = []
    count_in = contacts
    for position, name in enumerate(STEPS, start=1):
        removed = removed_at[position]
        steps.append(
            WaterfallStep(
                position=position,
                step=name,
                count_in=count_in,
                removed=removed,
                count_out=count_in - removed,
                reason=reasons[name],
                detail=details.get(name, {}),
            )
        )
        count_in -= removed
    return Waterfall(steps=tuple(steps), by_channel=by_channel, by_cell=by_cell)
