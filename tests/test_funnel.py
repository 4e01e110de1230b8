"""The eligibility funnel and audience snapshots against hand-built data in the embedded PostgreSQL."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.campaign.funnel import STEPS, FunnelSpec, drop_work_tables, run_funnel
from campaign_lib.campaign.snapshot import CampaignRecord, RunKey, approve_run, freeze_audience
from campaign_lib.errors import ConfigError
from campaign_lib.selection import load_selection

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BASE = FunnelSpec(
    campaign="water_park",
    channels=("email", "sms", "push"),
    purpose="newsletter",
    max_per_channel=1,
    max_total=2,
)


@pytest.fixture
def selections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "selections"
    folder.mkdir()
    (folder / "all_but_outsiders.sql").write_text(
        "-- description: Every contact whose last name is not Outsider\n"
        "select contact_id from core.contact where last_name is distinct from 'Outsider'\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KMS_SELECTIONS_DIR", str(folder))
    return folder


class People:
    """Builds accounts, contacts, consents and history by hand; returns ids by label."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ids: dict[str, int] = {}

    def add(
        self,
        label: str,
        *,
        email=None,
        phone=None,
        push=None,
        status="active",
        last_name="Gast",
        household=None,
    ):
        with self.engine.begin() as conn:
            account = self.ids.get(f"account:{household}") if household else None
            if account is None:
                account = conn.execute(
                    text("insert into core.account (account_type) values ('household') returning account_id")
                ).scalar_one()
                if household:
                    self.ids[f"account:{household}"] = account
            contact = conn.execute(
                text(
                    "insert into core.contact (account_id, status, merged_into_contact_id, first_name, last_name, email, phone_e164) "
                    "values (:a, :s, null, :f, :l, :e, :p) returning contact_id"
                ),
                {"a": account, "s": status, "f": label, "l": last_name, "e": email, "p": phone},
            ).scalar_one()
            if push:
                conn.execute(
                    text(
                        "insert into core.identifier (contact_id, kind, value, source_system) values (:c, 'push_token', :v, 'website')"
                    ),
                    {"c": contact, "v": push},
                )
        self.ids[label] = contact
        return contact

    def consent(
        self, label: str, channel: str, status: str, days_ago: float, purpose: str = "newsletter"
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
                    "values (:c, :ch, :p, :s, :at, 'website')"
                ),
                {
                    "c": self.ids[label],
                    "ch": channel,
                    "p": purpose,
                    "s": status,
                    "at": NOW - timedelta(days=days_ago),
                },
            )

    def suppress(self, *, label=None, kind=None, address=None, channel=None, reason="unsubscribe") -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "insert into campaign.suppression (contact_id, address_kind, address, channel, reason, source) "
                    "values (:c, :k, :a, :ch, :r, 'test')"
                ),
                {
                    "c": self.ids.get(label) if label else None,
                    "k": kind,
                    "a": address,
                    "ch": channel,
                    "r": reason,
                },
            )

    def sent(self, label: str, channel: str, campaign: str, days_ago: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "insert into campaign.campaign (campaign_name, origin, definition_version, definition) "
                    "values (:n, 'file', '0000000000000000', '{}') on conflict do nothing"
                ),
                {"n": campaign},
            )
            conn.execute(
                text(
                    "insert into campaign.contact_history (contact_id, channel, campaign_name, sent_at) values (:c, :ch, :n, :at)"
                ),
                {"c": self.ids[label], "ch": channel, "n": campaign, "at": NOW - timedelta(days=days_ago)},
            )

    def bought(self, label: str, sku: str) -> None:
        with self.engine.begin() as conn:
            product = conn.execute(
                text(
                    "insert into core.product (sku, name, category) values (:s, :s, 'water_park') "
                    "on conflict (sku) do update set name = excluded.name returning product_id"
                ),
                {"s": sku},
            ).scalar_one()
            conn.execute(
                text(
                    "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, product_id) "
                    "values (:c, 'shop_purchase', 'shop_pos', :r, :at, :p)"
                ),
                {"c": self.ids[label], "r": f"{label}-{sku}", "at": NOW - timedelta(days=30), "p": product},
            )


def reachable(people: People, label: str, **addresses) -> None:
    """A person with an email (and given addresses) who opted in to the newsletter on each."""
    people.add(label, email=f"{label}@example.org", **addresses)
    people.consent(label, "email", "opt_in", 100)
    if addresses.get("phone"):
        people.consent(label, "sms", "opt_in", 100)
    if addresses.get("push"):
        people.consent(label, "push", "opt_in", 100)


def outcome(engine: Engine, spec: FunnelSpec, selection_name: str = "all_but_outsiders"):
    """Run the funnel; return the waterfall and {contact_id: (dropped step or None, channel, cell)}."""
    with engine.connect() as conn:
        try:
            waterfall = run_funnel(conn, spec, load_selection(selection_name), {}, NOW)
            rows = conn.execute(
                text("select contact_id, dropped_at, channel::text, cell from pg_temp.funnel_contact")
            ).all()
            conn.commit()
        finally:
            drop_work_tables(conn)
    by_contact = {
        contact: (STEPS[dropped - 1] if dropped else None, channel, cell)
        for contact, dropped, channel, cell in rows
    }
    return waterfall, by_contact


def test_each_step_removes_the_people_it_should_and_the_waterfall_adds_up(
    clean_db: Engine, selections: Path
) -> None:
    p = People(clean_db)
    reachable(p, "kept_email")
    reachable(p, "kept_sms_first_choice_suppressed", phone="+4915100000001")
    p.add("merged_away", email="m@example.org", status="anonymous")
    p.add("outsider", email="o@example.org", last_name="Outsider")
    p.consent("outsider", "email", "opt_in", 10)
    p.add("no_address")
    p.consent("no_address", "email", "opt_in", 10)
    p.add("no_consent", email="nc@example.org")
    p.add("opted_out_later", email="oo@example.org")
    p.consent("opted_out_later", "email", "opt_in", 50)
    p.consent("opted_out_later", "email", "opt_out", 5)
    p.add("opted_in_again", email="oi@example.org")
    p.consent("opted_in_again", "email", "opt_out", 50)
    p.consent("opted_in_again", "email", "opt_in", 5)
    p.add("other_purpose_only", email="op@example.org")
    p.consent("other_purpose_only", "email", "opt_in", 5, purpose="surveys")
    reachable(p, "suppressed_contact")
    p.suppress(label="suppressed_contact", reason="erasure")
    reachable(p, "suppressed_address")
    p.suppress(kind="email", address="suppressed_address@example.org", reason="hard_bounce")
    p.add("blocked_domain", email="x@spam.example")
    p.consent("blocked_domain", "email", "opt_in", 5)
    p.suppress(kind="email_domain", address="spam.example", reason="blocklist")
    p.suppress(label="kept_sms_first_choice_suppressed", channel="email", reason="complaint")
    p.add("phone_blocked", phone="+4915100000003")
    p.consent("phone_blocked", "sms", "opt_in", 5)
    p.suppress(kind="phone", address="+4915100000003", channel="sms", reason="blocklist")
    p.add("push_token_revoked", push="tok-Revoked")
    p.consent("push_token_revoked", "push", "opt_in", 5)
    p.suppress(kind="push_token", address="tok-Revoked", reason="hard_bounce")
    reachable(p, "pressured_in_total", phone="+4915100000002", push="tok-total")
    p.sent("pressured_in_total", "email", "spring_sale", 2)
    p.sent("pressured_in_total", "sms", "easter_brunch", 3)
    reachable(p, "email_pressured_gets_push", push="tok-AbC")
    p.sent("email_pressured_gets_push", "email", "spring_sale", 1)
    reachable(p, "old_messages_do_not_count")
    p.sent("old_messages_do_not_count", "email", "spring_sale", 30)
    reachable(p, "household_first", household="meier")
    reachable(p, "household_second", household="meier")
    reachable(p, "bought_already")
    p.bought("bought_already", "WP-DAY-HOTEL")

    spec = FunnelSpec(**{**BASE.__dict__, "one_per_household": True, "offer_sku": "WP-DAY-HOTEL"})
    waterfall, result = outcome(clean_db, spec)

    expected = {
        "kept_email": (None, "email"),
        "kept_sms_first_choice_suppressed": (None, "sms"),
        "no_address": ("channel_eligibility", None),
        "no_consent": ("channel_eligibility", None),
        "opted_out_later": ("channel_eligibility", None),
        "opted_in_again": (None, "email"),
        "other_purpose_only": ("channel_eligibility", None),
        "suppressed_contact": ("suppression", None),
        "suppressed_address": ("suppression", None),
        "blocked_domain": ("suppression", None),
        "phone_blocked": ("suppression", None),
        "push_token_revoked": ("suppression", None),
        # Push has room, but two messages in the window reach the total limit.
        "pressured_in_total": ("contact_pressure", "push"),
        "email_pressured_gets_push": (None, "push"),
        "old_messages_do_not_count": (None, "email"),
        "household_first": (None, "email"),
        "household_second": ("one_per_household", "email"),
        "bought_already": ("already_bought", "email"),
    }
    actual = {label: result[p.ids[label]][:2] for label in expected}
    assert actual == expected
    assert p.ids["merged_away"] not in result and p.ids["outsider"] not in result

    steps = {s.step: s for s in waterfall.steps}
    assert [s.step for s in waterfall.steps] == list(STEPS)
    assert (steps["universe"].count_in, steps["universe"].removed) == (20, 1)
    assert steps["selection"].removed == 1
    assert steps["channel_eligibility"].removed == 4
    assert steps["suppression"].removed == 5
    assert steps["contact_pressure"].removed == 1
    assert steps["one_per_household"].removed == 1
    assert steps["already_bought"].removed == 1
    assert waterfall.audience == 6 and waterfall.by_channel == {"email": 4, "sms": 1, "push": 1}
    for step in waterfall.steps[1:]:
        assert step.count_in == waterfall.steps[step.position - 2].count_out


def test_one_per_household_only_when_asked(clean_db: Engine, selections: Path) -> None:
    p = People(clean_db)
    reachable(p, "anna", household="schulz")
    reachable(p, "ben", household="schulz")

    waterfall, _ = outcome(clean_db, BASE)

    assert waterfall.audience == 2
    assert waterfall.steps[STEPS.index("one_per_household")].reason == "not asked for"


def _many_reachable(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into core.account (account_type) select 'household' from generate_series(1, :n);"
                "insert into core.contact (account_id, first_name, last_name, email) "
                "select account_id, 'P' || account_id, 'Gast', 'p' || account_id || '@example.org' from core.account;"
                "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
                "select contact_id, 'email', 'newsletter', 'opt_in', now() - interval '1 year', 'website' from core.contact"
            ),
            {"n": count},
        )


def _unit_hash(value: str) -> float:
    return int(hashlib.md5(value.encode()).hexdigest()[:12], 16) / 2**48


def test_control_group_share_is_within_its_binomial_bound_and_stable_across_reruns(
    clean_db: Engine, selections: Path
) -> None:
    n, share = 20_000, 0.1
    _many_reachable(clean_db, n)
    spec = FunnelSpec(**{**BASE.__dict__, "control_share": share, "cells": {"a": 1.0, "b": 3.0}})

    first_waterfall, first = outcome(clean_db, spec)
    _, again = outcome(clean_db, spec)
    _, other_campaign = outcome(clean_db, FunnelSpec(**{**spec.__dict__, "campaign": "dolphin_show"}))

    control = {c for c, (_, _, cell) in first.items() if cell == "control"}
    # 4.5 standard deviations of Binomial(n, p): a false alarm about once in 300,000 runs.
    tolerance = 4.5 * math.sqrt(n * share * (1 - share))
    assert abs(len(control) - n * share) < tolerance
    assert first_waterfall.control == len(control)
    assert control == {c for c, (_, _, cell) in again.items() if cell == "control"}
    # The same hash in Python: a contact's group is a pure function of contact and campaign.
    assert control == {c for c in first if _unit_hash(f"{c}:water_park") < share}
    overlap = len(control & {c for c, (_, _, cell) in other_campaign.items() if cell == "control"})
    assert abs(overlap - n * share * share) < 4.5 * math.sqrt(n * share * share)
    target = n - len(control)
    cell_a = sum(1 for _, _, cell in first.values() if cell == "a")
    assert abs(cell_a - target / 4) < 4.5 * math.sqrt(target * 0.25 * 0.75)
    assert first_waterfall.by_cell == {"control": len(control), "a": cell_a, "b": target - cell_a}


def test_global_holdout_is_the_same_people_for_every_campaign(clean_db: Engine, selections: Path) -> None:
    _many_reachable(clean_db, 2_000)
    spec = FunnelSpec(**{**BASE.__dict__, "holdout_share": 0.05})

    _, water_park = outcome(clean_db, spec)
    _, dolphins = outcome(clean_db, FunnelSpec(**{**spec.__dict__, "campaign": "dolphin_show"}))

    held = {c for c, (step, _, _) in water_park.items() if step == "global_holdout"}
    assert held == {c for c, (step, _, _) in dolphins.items() if step == "global_holdout"}
    assert 40 < len(held) < 160


@pytest.mark.parametrize(("cap_by", "limit"), [("random", 300), ("score", 250)], ids=["random", "by-score"])
def test_size_cap_keeps_the_limit_and_the_control_share(
    clean_db: Engine, selections: Path, cap_by: str, limit: int
) -> None:
    _many_reachable(clean_db, 1_000)
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, amount_cents, currency) "
                "select contact_id, 'restaurant_bill', 'restaurant_pos', 'bill-' || contact_id, :at, contact_id * 100, 'EUR' from core.contact"
            ),
            {"at": NOW - timedelta(days=20)},
        )
    spec = FunnelSpec(**{**BASE.__dict__, "control_share": 0.2, "size_cap": limit, "cap_by": cap_by})

    waterfall, result = outcome(clean_db, spec)

    target = [c for c, (step, _, cell) in result.items() if step is None and cell != "control"]
    control = [c for c, (step, _, cell) in result.items() if step is None and cell == "control"]
    assert waterfall.audience == len(target) == limit
    assert len(control) == math.floor(limit * 0.2 / 0.8 + 0.5)
    if cap_by == "score":
        # The highest spenders are kept in both groups, so they stay comparable.
        every_target = sorted((c for c, (_, _, cell) in result.items() if cell != "control"), reverse=True)
        assert sorted(target, reverse=True) == every_target[:limit]


def _record(name: str = "water_park") -> CampaignRecord:
    return CampaignRecord(name, "file", "me", "test", "0123456789abcdef", {"name": name})


def test_a_rerun_of_a_frozen_run_returns_the_same_snapshot_and_counts(
    clean_db: Engine, selections: Path
) -> None:
    p = People(clean_db)
    for i in range(30):
        reachable(p, f"guest{i}")
    spec = FunnelSpec(**{**BASE.__dict__, "control_share": 0.2, "offer_sku": "WP-DAY-HOTEL"})
    selection = load_selection("all_but_outsiders")
    key = RunKey("kms_campaign_water_park", "manual__2026-11-20")

    first = freeze_audience(clean_db, _record(), spec, selection, {}, key, as_of=NOW)
    reachable(p, "arrived_later")
    again = freeze_audience(clean_db, _record(), spec, selection, {}, key)

    assert (first.reused, again.reused) == (False, True)
    assert again.campaign_run_id == first.campaign_run_id and again.status == "frozen"
    assert again.waterfall == first.waterfall
    with clean_db.connect() as conn:
        rows = conn.execute(
            text(
                "select count(*), count(*) filter (where cell = 'control'), min(offer_sku), min(selection_version) from campaign.audience"
            )
        ).one()
        run = conn.execute(
            text(
                "select status, audience_count, control_count, frozen_at is not null from campaign.campaign_run"
            )
        ).one()
        steps = conn.execute(text("select count(*) from campaign.waterfall_step")).scalar_one()
    assert rows == (30, first.waterfall.control, "WP-DAY-HOTEL", selection.version)
    assert tuple(run) == ("frozen", first.waterfall.audience, first.waterfall.control, True)
    assert steps == len(STEPS)

    fresh = freeze_audience(
        clean_db, _record(), spec, selection, {}, RunKey(key.dag_id, "manual__2026-11-21")
    )
    assert fresh.waterfall.audience + fresh.waterfall.control == 31


def test_the_snapshot_refuses_updates(clean_db: Engine, selections: Path) -> None:
    p = People(clean_db)
    reachable(p, "guest")
    freeze_audience(clean_db, _record(), BASE, load_selection("all_but_outsiders"), {}, RunKey("d", "r"))

    with pytest.raises(Exception, match="frozen snapshot"), clean_db.begin() as conn:
        conn.execute(text("update campaign.audience set cell = 'b'"))


def test_a_dry_run_records_the_waterfall_and_no_audience(clean_db: Engine, selections: Path) -> None:
    p = People(clean_db)
    reachable(p, "guest")
    key = RunKey("kms_campaign", "manual__dry")

    result = freeze_audience(
        clean_db, _record(), BASE, load_selection("all_but_outsiders"), {}, key, dry_run=True
    )
    again = freeze_audience(
        clean_db, _record(), BASE, load_selection("all_but_outsiders"), {}, key, dry_run=True
    )

    assert result.status == "dry_run" and result.waterfall.audience == 1
    assert again.reused and again.waterfall == result.waterfall
    with clean_db.connect() as conn:
        assert conn.execute(text("select count(*) from campaign.audience")).scalar_one() == 0
        assert conn.execute(text("select status::text from campaign.campaign_run")).scalar_one() == "dry_run"


def test_only_a_frozen_run_can_be_approved(clean_db: Engine, selections: Path) -> None:
    p = People(clean_db)
    reachable(p, "guest")
    selection = load_selection("all_but_outsiders")
    frozen = freeze_audience(clean_db, _record(), BASE, selection, {}, RunKey("d", "frozen"))
    dry = freeze_audience(clean_db, _record(), BASE, selection, {}, RunKey("d", "dry"), dry_run=True)

    approve_run(clean_db, frozen.campaign_run_id)
    approve_run(clean_db, frozen.campaign_run_id)
    with pytest.raises(ConfigError, match="not frozen"):
        approve_run(clean_db, dry.campaign_run_id)

    again = freeze_audience(clean_db, _record(), BASE, selection, {}, RunKey("d", "frozen"))
    assert again.status == "approved" and again.reused


def test_a_failed_attempt_is_marked_and_the_next_attempt_of_the_same_run_starts_it_over(
    clean_db: Engine, selections: Path
) -> None:
    from campaign_lib.errors import SelectionError

    p = People(clean_db)
    reachable(p, "guest")
    (selections / "flaky.sql").write_text(
        "-- description: Reads a column that is not there yet\nselect contact_id from core.contact where nickname is null\n",
        encoding="utf-8",
    )
    key = RunKey("kms_campaign_water_park", "scheduled__2026-11-20")

    with pytest.raises(SelectionError):
        freeze_audience(clean_db, _record(), BASE, load_selection("flaky"), {}, key, as_of=NOW)
    with clean_db.connect() as conn:
        failed = conn.execute(
            text("select campaign_run_id, status::text, as_of from campaign.campaign_run")
        ).one()
    (selections / "flaky.sql").write_text(
        "-- description: Fixed\nselect contact_id from core.contact where last_name is not null\n",
        encoding="utf-8",
    )
    fixed = freeze_audience(clean_db, _record(), BASE, load_selection("flaky"), {}, key)

    assert failed.status == "failed"
    assert (fixed.campaign_run_id, fixed.status, fixed.as_of, fixed.reused) == (
        failed.campaign_run_id,
        "frozen",
        NOW,
        False,
    )
    assert fixed.waterfall.audience == 1
