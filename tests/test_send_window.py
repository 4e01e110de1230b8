"""The campaign's send window: when delivery may start (SendWindow.opens_in), in the window's
time zone, on its weekdays, with the end minute excluded and DST change nights counted in real
hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from campaign_lib.campaign.definition import SendWindow

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


@pytest.mark.parametrize(
    ("window", "at", "opens_in"),
    [
        # Sunday 22 November 2026, Berlin in winter time (UTC+1).
        ({}, datetime(2026, 11, 22, 12, 0, tzinfo=BERLIN), timedelta(0)),
        ({}, datetime(2026, 11, 22, 9, 0, tzinfo=BERLIN), timedelta(0)),
        ({}, datetime(2026, 11, 22, 8, 59, 30, tzinfo=BERLIN), timedelta(seconds=30)),
        ({}, datetime(2026, 11, 22, 6, 15, tzinfo=UTC), timedelta(hours=1, minutes=45)),
        # The end minute is outside: the next day's start.
        ({}, datetime(2026, 11, 22, 19, 59, 59, tzinfo=BERLIN), timedelta(0)),
        ({}, datetime(2026, 11, 22, 20, 0, tzinfo=BERLIN), timedelta(hours=13)),
        ({}, datetime(2026, 11, 22, 23, 30, tzinfo=BERLIN), timedelta(hours=9, minutes=30)),
        # Weekdays only: Saturday noon waits for Monday 09:00; Friday after the end too.
        ({"days": WEEKDAYS}, datetime(2026, 11, 21, 12, 0, tzinfo=BERLIN), timedelta(hours=45)),
        ({"days": WEEKDAYS}, datetime(2026, 11, 20, 20, 0, tzinfo=BERLIN), timedelta(hours=61)),
        ({"days": WEEKDAYS}, datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN), timedelta(0)),
        # One day a week, just after it closed: almost a week.
        ({"days": ["mon"]}, datetime(2026, 11, 23, 20, 0, tzinfo=BERLIN), timedelta(days=6, hours=13)),
        # The window's own time zone, not the moment's: 14:00 in Berlin is 08:00 in New York.
        (
            {"timezone": "America/New_York"},
            datetime(2026, 11, 22, 14, 0, tzinfo=BERLIN),
            timedelta(hours=1),
        ),
        # DST nights in Berlin: the clock jumps 02:00 -> 03:00 on 29 March 2026 and
        # 03:00 -> 02:00 on 25 October 2026. From 20:00 to 09:00 is 12 hours, or 14.
        ({}, datetime(2026, 3, 28, 20, 0, tzinfo=BERLIN), timedelta(hours=12)),
        ({}, datetime(2026, 10, 24, 20, 0, tzinfo=BERLIN), timedelta(hours=14)),
        # A start the clock skips (02:30 on 29 March) opens an hour later, at 03:30 (01:30 UTC).
        ({"start": "02:30"}, datetime(2026, 3, 29, 0, 0, tzinfo=UTC), timedelta(hours=1, minutes=30)),
        ({"start": "02:30"}, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), timedelta(0)),
        # A start the clock passes twice (02:30 on 25 October) opens at its first pass (00:30 UTC).
        ({"start": "02:30"}, datetime(2026, 10, 25, 0, 0, tzinfo=UTC), timedelta(minutes=30)),
        # An end of 24:00 is midnight: open to the end of the day; 00:00-24:00 never closes.
        ({"end": "24:00"}, datetime(2026, 11, 22, 23, 59, 59, tzinfo=BERLIN), timedelta(0)),
        ({"end": "24:00"}, datetime(2026, 11, 23, 0, 0, tzinfo=BERLIN), timedelta(hours=9)),
        ({"start": "00:00", "end": "24:00"}, datetime(2026, 11, 23, 0, 0, tzinfo=BERLIN), timedelta(0)),
        ({"start": "00:00", "end": "24:00"}, datetime(2026, 3, 29, 2, 30, tzinfo=UTC), timedelta(0)),
    ],
)
def test_the_window_opens_in(window: dict, at: datetime, opens_in: timedelta) -> None:
    assert SendWindow.model_validate(window).opens_in(at) == opens_in


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="a send window needs an aware datetime, not a naive one"):
        SendWindow().opens_in(datetime(2026, 11, 22, 12, 0))


@pytest.mark.parametrize(
    ("at", "opens_at"),
    [
        pytest.param(
            datetime(2026, 11, 22, 7, 0, tzinfo=BERLIN), datetime(2026, 11, 22, 8, 0, tzinfo=UTC), id="before"
        ),
        pytest.param(datetime(2026, 11, 22, 12, 0, tzinfo=BERLIN), None, id="inside"),
        pytest.param(
            datetime(2026, 11, 22, 20, 0, tzinfo=BERLIN),
            datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
            id="at-end",
        ),
    ],
)
def test_the_window_opens_at(at: datetime, opens_at: datetime | None) -> None:
    window = SendWindow()

    assert window.opens_at(at) == opens_at
    assert window.describe() == "09:00-20:00 Europe/Berlin, mon,tue,wed,thu,fri,sat,sun"
    assert window.local_time(datetime(2026, 11, 23, 8, 0, tzinfo=UTC)) == "Mon 2026-11-23 09:00 CET"


@pytest.mark.parametrize("end", ["24:01", "25:00", "24:30"])
def test_only_midnight_is_past_23_59(end: str) -> None:
    with pytest.raises(ValueError, match="end"):
        SendWindow(end=end)
