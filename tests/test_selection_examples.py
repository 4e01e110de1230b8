"""Every example selection in selections/ loads, passes PostgreSQL's check and runs on a small
generated resort: the generator's exports for 300 guests, loaded through the real parser and
loader and resolved into the single customer view."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.generator import generate
from campaign_lib.identity import resolve
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.ingest.sftp_ingest import load_folder
from campaign_lib.selection import (
    check_selection,
    contact_ids,
    list_selections,
    load_selection,
    selections_folder,
)

EXAMPLES = list_selections()


@pytest.fixture(scope="module")
def resort(engine: Engine, kms_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The single customer view of 300 generated guests (the test database is emptied first)."""
    with engine.begin() as conn:
        # Every table the other tests' clean_db empties (as it runs per test, not per module).
        tables = conn.execute(
            text(
                "select string_agg(format('%I.%I', schemaname, tablename), ', ') from pg_tables "
                "where schemaname in ('core', 'ingest', 'campaign') and tablename not in ('source_system', 'activity_type')"
            )
        ).scalar_one()
        conn.execute(text(f"truncate {tables} restart identity cascade"))
    generated = tmp_path_factory.mktemp("resort") / "drop"
    generate(generated, guests=300, seed=7)
    with pytest.MonkeyPatch.context() as patch:
        # The quality gate's SQL engine gives the same verdicts as Great Expectations, 10x faster.
        patch.setenv("KMS_QUALITY_GATE", "sql")
        load_generated(engine, kms_url, generated)
    resolve(engine)
    return engine


def load_generated(engine: Engine, url: URL, generated: Path) -> None:
    """Every generated file through the real parser and loader (load_folder); each must merge."""
    for result in load_folder(engine, url, generated, load_feeds()):
        assert result.status == "merged", result.error


def test_the_resort_ships_the_example_selections() -> None:
    assert {
        "hotel_guests_without_water_park",
        "lapsed_restaurant_guests",
        "newsletter_subscribers_without_booking",
        "families_with_children_dolphinarium",
        "big_spenders",
        "night_owls",
    } <= set(EXAMPLES)
    assert load_selection("night_owls").kind == "sql"
    assert all(path.stem in EXAMPLES for path in selections_folder().glob("*.*"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_selection_loads_checks_and_runs_on_generated_data(resort: Engine, name: str) -> None:
    selection = load_selection(name)
    assert selection.description
    with resort.connect() as conn:
        check_selection(conn, selection)
        chosen = contact_ids(conn, selection)
        active = set(
            conn.execute(text("select contact_id from core.contact where status = 'active'")).scalars()
        )
    assert set(chosen) <= active
    assert len(chosen) == len(set(chosen))


def test_the_demo_selection_finds_hotel_guests_who_never_went_to_the_water_park(resort: Engine) -> None:
    with resort.connect() as conn:
        chosen = contact_ids(
            conn, load_selection("hotel_guests_without_water_park"), {"stay_within_days": 730}
        )
        visitors = set(
            conn.execute(
                text("select contact_id from core.activity where activity_type = 'water_park_ticket'")
            ).scalars()
        )
        guests = set(
            conn.execute(
                text("select contact_id from core.activity where activity_type = 'hotel_stay'")
            ).scalars()
        )
    assert chosen, "the demo campaign needs an audience"
    assert set(chosen) <= guests - visitors


def test_the_example_set_operations_hold_on_generated_data(resort: Engine) -> None:
    with resort.connect() as conn:

        def ids(name: str, values: dict | None = None) -> set[int]:
            return set(contact_ids(conn, load_selection(name), values))

        audience, candidates, spenders = (
            ids("family_offer_audience"),
            ids("family_offer_candidates"),
            ids("big_spenders"),
        )
        families = ids("families_with_children_dolphinarium", {"within_days": 365})
        hotel = ids("hotel_guests_without_water_park", {"stay_within_days": 180})
    assert candidates == families | hotel
    assert audience == candidates - spenders
    assert families, "generated families buy dolphinarium tickets"


def test_every_example_is_documented() -> None:
    reference = (Path(__file__).parent.parent / "docs" / "selections.md").read_text(encoding="utf-8")
    missing = [name for name in EXAMPLES if name not in reference]
    assert not missing, f"docs/selections.md does not mention {missing}"
