"""Campaign definitions: the shipped ones are valid, broken ones get `file: field: problem`,
and the `kms campaign` and `kms selection` commands, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import adhoc_campaign, load_campaign, load_campaigns
from campaign_lib.campaign.funnel import FunnelSpec
from campaign_lib.campaign.references import checked_selection
from campaign_lib.campaign.settings import CampaignSettings, load_campaign_settings
from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import ConfigError

KMS = str(Path(sys.executable).parent / "kms")
DEMO = PROJECT_ROOT / "campaigns" / "water_park_for_hotel_guests.yaml"


def test_the_shipped_campaigns_are_valid_and_their_selections_bind() -> None:
    valid, invalid = load_campaigns()

    assert invalid == {}
    assert {"water_park_for_hotel_guests", "lapsed_restaurant_guests"} <= set(valid)
    demo = valid["water_park_for_hotel_guests"].campaign
    assert (demo.selection.name, demo.channels, demo.control_share) == (
        "hotel_guests_without_water_park",
        ["email", "sms", "push"],
        0.1,
    )
    for loaded in valid.values():
        selection, params = checked_selection(loaded)
        assert selection.name == loaded.campaign.selection.name and isinstance(params, dict)


def _write(tmp_path: Path, name: str, change: dict | None = None, drop: str | None = None) -> Path:
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["name"] = name
    raw.update(change or {})
    if drop:
        raw.pop(drop)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "drop", "problem"),
    [
        pytest.param(
            {"control_share": 0.7},
            None,
            "control_share: Input should be less than or equal to 0.5, not 0.7",
            id="control-share",
        ),
        pytest.param(
            {"channels": ["email", "fax"]},
            None,
            "channels[1]: Input should be 'email', 'sms' or 'push', not 'fax'",
            id="unknown-channel",
        ),
        pytest.param(
            {"channels": ["email", "email"]},
            None,
            "channels: each channel once, email named twice",
            id="channel-twice",
        ),
        pytest.param({"budgett": 10}, None, "budgett: unknown field", id="unknown-field"),
        pytest.param({}, "owner", "owner: required field is missing", id="missing-owner"),
        pytest.param(
            {"schedule": "every monday"}, None, "schedule: must be a cron expression", id="bad-schedule"
        ),
        pytest.param(
            {"offer": {"sku": "wp day", "name": "x"}},
            None,
            "offer.sku: String should match pattern",
            id="sku-syntax",
        ),
        pytest.param(
            {"cells": [{"name": "control", "weight": 1}]},
            None,
            "cells[0].name: 'control' is the control group's name",
            id="cell-named-control",
        ),
        pytest.param(
            {"cells": [{"name": "a", "weight": 0}]},
            None,
            "cells[0].weight: Input should be greater than 0, not 0",
            id="cell-weight",
        ),
        pytest.param(
            {"send_window": {"start": "20:00", "end": "09:00"}},
            None,
            "send_window: start 20:00 must be before end 09:00",
            id="send-window",
        ),
        pytest.param(
            {"send_window": {"timezone": "Mars/Olympus"}},
            None,
            "send_window.timezone: unknown time zone 'Mars/Olympus'",
            id="time-zone",
        ),
        pytest.param(
            {"channels": ["email"]},
            None,
            "templates: template for sms, push, which is not in channels",
            id="template-without-channel",
        ),
        pytest.param(
            {"costs": {"per_message": {"email": -1}}},
            None,
            "costs.per_message.email: Input should be greater than or equal to 0",
            id="negative-cost",
        ),
        pytest.param(
            {
                "templates": {
                    "email": {
                        "subject": "s",
                        "html": "messages/none.html.j2",
                        "text": "messages/none.txt.j2",
                    },
                    "sms": {"text": "messages/none.txt.j2"},
                    "push": {"text": "messages/none.txt.j2"},
                }
            },
            None,
            "templates.email.html: no template file 'messages/none.html.j2'",
            id="template-file-missing",
        ),
        pytest.param(
            {"name": "another_name"}, None, "name: must equal the file name", id="name-not-file-name"
        ),
    ],
)
def test_an_invalid_definition_names_file_field_and_problem(tmp_path: Path, change, drop, problem) -> None:
    name = "another_name_file" if change.get("name") else "broken_offer"
    path = _write(tmp_path, name, change, drop)

    with pytest.raises(ConfigError) as caught:
        load_campaign(path)

    assert f"{path}: {problem}" in str(caught.value)


def test_a_definition_that_is_not_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nchannels: [email\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"typo.yaml: line \d+: not valid YAML"):
        load_campaign(path)


def test_a_selection_parameter_the_selection_does_not_declare_is_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "wrong_param",
        {"selection": {"name": "hotel_guests_without_water_park", "params": {"nights": 3}}},
    )

    with pytest.raises(ConfigError, match=r"wrong_param.yaml: selection.params: .*nights"):
        checked_selection(load_campaign(path))


def test_campaign_pressure_overrides_the_installation_settings() -> None:
    loaded = load_campaign(DEMO)
    settings = CampaignSettings(pressure_window_days=30, pressure_max_per_channel=5, pressure_max_total=9)

    spec = FunnelSpec.from_campaign(loaded.campaign, settings)

    assert (spec.pressure_window_days, spec.max_per_channel, spec.max_total) == (7, 1, 2)
    assert spec.offer_sku == "WP-DAY-HOTEL" and spec.one_per_household


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KMS_PRESSURE_MAX_TOTAL", "0"),
        ("KMS_PRESSURE_WINDOW_DAYS", "a week"),
        ("KMS_GLOBAL_HOLDOUT_SHARE", "1.5"),
    ],
)
def test_invalid_settings_are_refused_with_their_name(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_campaign_settings({variable: value})


def test_an_ad_hoc_run_is_validated_like_a_file() -> None:
    choices = {
        "campaign_name": "adhoc",
        "selection": "hotel_guests_without_water_park",
        "selection_params": {},
        "template": "lapsed_restaurant_guests",
        "email_subject": "Hallo",
        "channels": ["email", "push"],
        "purpose": "newsletter",
        "control_share": 0.1,
    }

    with pytest.raises(
        ConfigError, match=r"ad-hoc run: template: messages/lapsed_restaurant_guests/push.txt.j2 missing"
    ):
        adhoc_campaign(choices)
    assert adhoc_campaign({**choices, "channels": ["email", "sms"]}).templates.sms is not None


def kms(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KMS, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_kms_campaign_validate_and_list(tmp_path: Path) -> None:
    broken = _write(tmp_path, "broken_offer", {"control_share": 0.9})

    good = kms("campaign", "validate")
    bad = kms("campaign", "validate", str(DEMO), str(broken))
    listed = kms("campaign", "list")

    assert good.returncode == 0 and "campaigns/water_park_for_hotel_guests.yaml: valid" in good.stdout
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "campaigns/water_park_for_hotel_guests.yaml: valid" in bad.stdout
    assert (
        f"kms: error: {broken}: control_share: Input should be less than or equal to 0.5, not 0.9"
        in bad.stderr
    )
    assert "kms_campaign_water_park_for_hotel_guests" in listed.stdout


def test_kms_selection_preview_prints_the_waterfall_and_writes_nothing(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "insert into core.account (account_type) values ('household');"
                "insert into core.contact (account_id, first_name, email) select account_id, 'Ina', 'ina@example.org' from core.account;"
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at) "
                "select contact_id, 'hotel_stay', 'hotel_pms', 'stay-1', now() - interval '30 days' from core.contact;"
                "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
                "select contact_id, 'email', 'newsletter', 'opt_in', now() - interval '40 days', 'website' from core.contact"
            )
        )

    plain = kms("selection", "preview", "hotel_guests_without_water_park", "--param", "stay_within_days=90")
    with_campaign = kms(
        "selection", "preview", "hotel_guests_without_water_park", "--campaign", "water_park_for_hotel_guests"
    )
    wrong = kms("selection", "preview", "hotel_guests_without_water_park", "--param", "nights=3")

    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[2].split()[:5] == ["2", "selection", "1", "0", "1"]
    assert "audience 1 + control 0; by channel: email 1" in plain.stdout
    assert with_campaign.returncode == 0 and "already bought WP-DAY-HOTEL" in with_campaign.stdout
    assert wrong.returncode == 1 and "nights" in wrong.stderr
    with clean_db.connect() as conn:
        assert conn.execute(text("select count(*) from campaign.campaign_run")).scalar_one() == 0


def test_kms_selection_list_and_validate() -> None:
    listed = kms("selection", "list")
    valid = kms("selection", "validate", "hotel_guests_without_water_park", "lapsed_restaurant_guests")
    unknown = kms("selection", "validate", "no_such_selection")

    assert listed.returncode == 0
    assert any(
        line.split()[:2] == ["hotel_guests_without_water_park", "rules"]
        for line in listed.stdout.splitlines()
    )
    assert valid.returncode == 0 and valid.stdout.count(": valid") == 2
    assert (
        unknown.returncode == 1
        and "no_such_selection" in unknown.stderr
        and "Traceback" not in unknown.stderr
    )
