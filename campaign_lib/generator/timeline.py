"""The two years of resort life before the as-of date, as lookup tables.

Formatting a date or time per row with strftime would dominate the generator's hot loop,
so every day of the window and every second of a day is formatted once up front.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from itertools import accumulate

WINDOW_DAYS = 730

# Relative arrival and visit demand by calendar month (summer and Christmas peak).
_MONTH_DEMAND = (0.7, 0.8, 0.85, 1.0, 1.1, 1.25, 1.6, 1.6, 1.1, 1.0, 0.7, 0.95)


def _last_sunday(year: int, month: int) -> dt.date:
    day = dt.date(year, month, 31)
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Day-indexed lookup tables; day 0 is two years before ``as_of``."""

    as_of: dt.date
    start: dt.date
    iso: tuple[str, ...]
    german: tuple[str, ...]
    month_of_day: tuple[int, ...]
    months: tuple[tuple[int, int], ...]
    # Europe/Berlin offset before and after the DST switch and the second of day it happens.
    utc_offset: tuple[tuple[str, int, str], ...]
    demand_cumulative: tuple[float, ...]

    @property
    def days(self) -> int:
        """Number of days in the window."""
        return len(self.iso)


@cache
def timeline(as_of: dt.date) -> Timeline:
    """Return the lookup tables for the window ``[as_of - 730 days, as_of)``."""
    start = as_of - dt.timedelta(days=WINDOW_DAYS)
    dates = [start + dt.timedelta(days=d) for d in range(WINDOW_DAYS)]
    months: list[tuple[int, int]] = []
    month_of_day = []
    for day in dates:
        if not months or months[-1] != (day.year, day.month):
            months.append((day.year, day.month))
        month_of_day.append(len(months) - 1)
    offsets = []
    for day in dates:
        spring, autumn = _last_sunday(day.year, 3), _last_sunday(day.year, 10)
        summer = spring < day < autumn
        if day == spring:
            offsets.append(("+01:00", 2 * 3600, "+02:00"))
        elif day == autumn:
            offsets.append(("+02:00", 3 * 3600, "+01:00"))
        else:
            offset = "+02:00" if summer else "+01:00"
            offsets.append((offset, 86400, offset))
    demand = [_MONTH_DEMAND[day.month - 1] * (1.3 if day.weekday() in (4, 5) else 1.0) for day in dates]
    return Timeline(
        as_of=as_of,
        start=start,
        iso=tuple(day.isoformat() for day in dates),
        german=tuple(day.strftime("%d.%m.%Y") for day in dates),
        month_of_day=tuple(month_of_day),
        months=tuple(months),
        utc_offset=tuple(offsets),
        demand_cumulative=tuple(accumulate(demand)),
    )


@cache
def clock() -> tuple[str, ...]:
    """Return ``HH:MM:SS`` for every second of a day, indexed by second."""
    two_digits = [f"{n:02d}" for n in range(60)]
    return tuple(f"{h}:{m}:{s}" for h in two_digits[:24] for m in two_digits for s in two_digits)


def drop_time(as_of: dt.date, year: int, month: int, hour: int, minute: int) -> dt.datetime:
    """Return when a source drops the export of one month: early on the 1st of the next month.

    The export of the month that is still running at ``as_of`` drops on ``as_of`` itself.
    """
    next_month = dt.date(year + month // 12, month % 12 + 1, 1)
    return dt.datetime.combine(min(next_month, as_of), dt.time(hour, minute))
