"""Campaign DAGs: the factory, invalid definitions as import errors, the ad-hoc trigger form,
and runs with dag.test() that freeze an audience in the test database."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.config import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates"
GOOD = """\
name: {name}
description: Test campaign
owner: test@resort.example
selection: {{name: everyone, params: {{}}}}
purpose: newsletter
channels: [email]
templates:
  email: {{subject: Hallo, html: messages/water_park_for_hotel_guests/email.html.j2,
           text: messages/water_park_for_hotel_guests/email.txt.j2}}
offer: {{sku: WP-DAY-HOTEL, name: eine Tageskarte}}
schedule: null
control_share: 0.25
"""


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "spring_offer.yaml").write_text(GOOD.format(name="spring_offer"), encoding="utf-8")
    selections = tmp_path / "selections"
    selections.mkdir()
    (selections / "everyone.sql").write_text(
        "-- description: Every active contact\nselect contact_id from core.contact\n", encoding="utf-8"
    )
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    monkeypatch.setenv("KMS_CAMPAIGNS_DIR", str(campaigns))
    monkeypatch.setenv("KMS_SELECTIONS_DIR", str(selections))
    monkeypatch.setenv("KMS_TEMPLATES_DIR", str(tmp_path / "templates"))
    return tmp_path


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def guests(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into core.account (account_type) select 'household' from generate_series(1, :n);"
                "insert into core.contact (account_id, first_name, email) "
                "select account_id, 'G' || account_id, 'g' || account_id || '@example.org' from core.account;"
                "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
                "select contact_id, 'email', 'newsletter', 'opt_in', now() - interval '1 day', 'website' from core.contact"
            ),
            {"n": count},
        )


def test_a_broken_definition_is_an_import_error_naming_file_field_and_problem_and_breaks_no_other_dag(
    folders: Path,
) -> None:
    (folders / "campaigns" / "summer_offer.yaml").write_text(
        GOOD.format(name="summer_offer"), encoding="utf-8"
    )
    (folders / "campaigns" / "broken.yaml").write_text(
        GOOD.format(name="broken").replace("control_share: 0.25", "control_share: 0.8\nbudgett: 3"),
        encoding="utf-8",
    )

    bag = dagbag()

    assert {"kms_campaign_spring_offer", "kms_campaign_summer_offer"} <= set(bag.dags)
    assert "kms_campaign_broken" not in bag.dags
    assert "kms_campaign" in bag.dags and "kms_identity" in bag.dags
    errors = {Path(path).name: message for path, message in bag.import_errors.items()}
    assert set(errors) == {"kms_campaign_definitions.py"}
    assert (
        "broken.yaml: control_share: Input should be less than or equal to 0.5, not 0.8"
        in errors["kms_campaign_definitions.py"]
    )
    assert "broken.yaml: budgett: unknown field" in errors["kms_campaign_definitions.py"]


def test_each_definition_becomes_a_dag_with_its_schedule_and_hand_over_asset(folders: Path) -> None:
    approval = GOOD.format(name="vip_offer").replace(
        "schedule: null", "schedule: on_single_customer_view_update\napproval_required: true"
    )
    (folders / "campaigns" / "vip_offer.yaml").write_text(approval, encoding="utf-8")

    bag = dagbag()

    plain, vip = bag.dags["kms_campaign_spring_offer"], bag.dags["kms_campaign_vip_offer"]
    delivery = [
        "materialise_outbox",
        "wait_for_send_window",
        "plan_email",
        "deliver_email",
        "finish_delivery",
        "render_report",
    ]
    assert [t.task_id for t in plain.topological_sort()] == [
        "validate",
        "freeze_audience",
        "publish_audience",
        *delivery,
    ]
    assert [t.task_id for t in vip.topological_sort()] == [
        "validate",
        "freeze_audience",
        "approve_audience",
        "publish_audience",
        *delivery,
    ]
    assert type(plain.timetable).__name__ == "NullTimetable"
    assert "kms://core/single_customer_view" in str(vip.timetable.asset_condition)
    outlets = vip.get_task("publish_audience").outlets
    assert [asset.uri for asset in outlets] == ["kms://campaign/vip_offer/audience"]


def test_a_campaign_dag_run_freezes_its_audience_and_a_rerun_keeps_it(
    folders: Path, clean_db: Engine, smtp_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from servers_smtp import smtp_connection

    monkeypatch.setenv("AIRFLOW_CONN_KMS_SMTP", json.dumps(smtp_connection(smtp_server)))
    monkeypatch.setenv("AIRFLOW_CONN_KMS_TRACKING", json.dumps({"conn_type": "http", "password": "t" * 40}))
    guests(clean_db, 200)
    dag = dagbag().dags["kms_campaign_spring_offer"]

    # send_now: the test runs at any hour, inside the campaign's send window or not.
    run = dag.test(run_conf={"send_now": True})

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success", states
    with clean_db.connect() as conn:
        status, audience, control, dag_id = conn.execute(
            text("select status::text, audience_count, control_count, dag_id from campaign.campaign_run")
        ).one()
        rows = conn.execute(text("select count(*) from campaign.audience")).scalar_one()
    assert (status, dag_id) == ("frozen", "kms_campaign_spring_offer")
    assert audience + control == rows == 200
    assert 20 < control < 80

    published = run.get_task_instance("publish_audience").xcom_pull(task_ids="publish_audience")
    assert published["run_id"] == run.run_id and published["audience"] == audience


def test_the_ad_hoc_form_refuses_values_outside_its_lists_and_bounds(folders: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag().dags["kms_campaign"]
    assert dag.params["selection"] == "everyone"
    for bad in (
        {"control_share": 0.9},
        {"channels": ["fax"]},
        {"channels": []},
        {"selection": "nobody_knows_this"},
        {"template": "../../etc"},
        {"limit": 0},
        {"campaign_name": "Robert'); drop table"},
    ):
        with pytest.raises(ParamValidationError):
            dag.test(run_conf=bad)


def test_an_ad_hoc_dry_run_shows_the_waterfall_and_freezes_nothing(folders: Path, clean_db: Engine) -> None:
    guests(clean_db, 50)
    dag = dagbag().dags["kms_campaign"]

    run = dag.test(
        run_conf={"template": "water_park_for_hotel_guests", "channels": ["email", "sms"], "dry_run": True}
    )

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == dict.fromkeys(
        ["freeze_audience", "publish_audience", "materialise_outbox", "wait_for_send_window"]
        + ["finish_delivery", "render_report"]
        + [f"{step}_{channel}" for step in ("plan", "deliver") for channel in ("email", "sms", "push")],
        "skipped",
    )
    with clean_db.connect() as conn:
        run_row = conn.execute(text("select status::text, campaign_name from campaign.campaign_run")).one()
        steps = conn.execute(
            text("select step, count_out from campaign.waterfall_step order by position")
        ).all()
        frozen = conn.execute(text("select count(*) from campaign.audience")).scalar_one()
    assert tuple(run_row) == ("dry_run", "adhoc")
    assert steps[1] == ("selection", 50) and frozen == 0


def test_a_dry_run_leaves_its_waterfall_as_the_run_note(
    folders: Path, clean_db: Engine, api_server: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import httpx

    guests(clean_db, 30)
    monkeypatch.setenv("AIRFLOW_CONN_KMS_AIRFLOW_API", json.dumps({"conn_type": "http", **api_server}))
    dag = dagbag().dags["kms_campaign_spring_offer"]

    run = dag.test(run_conf={"dry_run": True})

    token = httpx.post(
        f"{api_server['host']}/auth/token", json={"username": "admin", "password": api_server["password"]}
    ).json()["access_token"]
    stored = httpx.get(
        f"{api_server['host']}/api/v2/dags/{dag.dag_id}/dagRuns/{run.run_id}",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert stored["note"].startswith("Dry run, nothing frozen: audience ")
    assert "selection 30" in stored["note"]
    with clean_db.connect() as conn:
        assert conn.execute(text("select count(*) from campaign.audience")).scalar_one() == 0
