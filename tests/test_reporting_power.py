"""The minimum detectable effect that `kms campaign validate` shows before a campaign runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import find_campaign
from campaign_lib.reporting.power import expected_detection
from campaign_lib.reporting.stats import minimum_detectable_effect

KMS = str(Path(sys.executable).parent / "kms")
DEMO = "water_park_for_hotel_guests"


def latest_run(engine: Engine, audience: int, control: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.campaign (campaign_name, origin, definition_version, definition) "
                "values (:c, 'file', '0000000000000000', '{}');"
                "insert into campaign.campaign_run (campaign_name, dag_id, run_id, status, definition_version, "
                "selection_name, selection_version, as_of, audience_count, control_count, frozen_at) "
                "values (:c, 'd', 'r', 'frozen', 'v', 's', 'v', now(), :a, :k, now())"
            ),
            {"c": DEMO, "a": audience, "k": control},
        )


def test_the_latest_run_sets_the_audience_and_the_latest_report_the_base_rate(
    clean_db: Engine, tmp_path: Path
) -> None:
    campaign = find_campaign(DEMO).campaign
    latest_run(clean_db, 9000, 1000)

    by_default = expected_detection(clean_db, campaign, tmp_path)
    (tmp_path / DEMO).mkdir()
    summary = {"campaign_run_id": 1, "control_people": 1000, "control_converters": 50}
    (tmp_path / DEMO / "run_1.json").write_text(json.dumps(summary), encoding="utf-8")
    from_history = expected_detection(clean_db, campaign, tmp_path)

    assert by_default.people == 10_000 and by_default.baseline == 0.02
    assert by_default.effect == pytest.approx(minimum_detectable_effect(9000, 1000, 0.02))
    assert from_history.baseline == pytest.approx(0.05)
    assert from_history.effect == pytest.approx(minimum_detectable_effect(9000, 1000, 0.05))
    assert from_history.line() == (
        "  minimum detectable effect: +"
        f"{100 * from_history.effect:.2f} points (10,000 people (its latest run), control share 10%, "
        "base rate 5.0% (its latest report's control group))"
    )


def test_kms_campaign_validate_prints_the_minimum_detectable_effect(clean_db: Engine, tmp_path: Path) -> None:
    latest_run(clean_db, 45_000, 5_000)

    done = subprocess.run(
        [KMS, "campaign", "validate", f"campaigns/{DEMO}.yaml"],
        env={**os.environ, "KMS_REPORTS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    effect = minimum_detectable_effect(45_000, 5_000, 0.02)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"campaigns/{DEMO}.yaml: valid",
        f"  minimum detectable effect: +{100 * effect:.2f} points (50,000 people (its latest run), "
        "control share 10%, base rate 2.0% (default))",
    ]


def test_a_campaign_that_never_ran_is_previewed(clean_db: Engine, tmp_path: Path) -> None:
    detection = expected_detection(clean_db, find_campaign(DEMO).campaign, tmp_path)

    assert detection.audience_source == "a preview now" and detection.people == 0
    assert detection.line().endswith("unknown, the selection finds nobody now (a preview now)")
