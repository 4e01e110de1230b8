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
    assert [t.task_id for t in plain.topological_sort()] == [
        "validate",
        "freeze_audience",
        "publish_audience",
    ]
    assert [t.task_id for t in vip.topological_sort()] == [
        "validate",
        "freeze_audience",
        "approve_audience",
        "publish_audience",
    ]
    assert type(plain.timetable).__name__ == "NullTimetable"
    assert "kms://core/single_customer_view" in str(vip.timetable.asset_condition)
    outlets = vip.get_task("publish_audience").outlets
    assert [asset.uri for asset in outlets] == ["kms://campaign/vip_offer/audience"]


def test_a_campaign_dag_run_freezes_its_audience_and_a_rerun_keeps_it(
    folders: Path, clean_db: Engine
) -> None:
    guests(clean_db, 200)
    dag = dagbag().dags["kms_campaign_spring_offer"]

    run = dag.test()

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
    assert states == {"freeze_audience": "skipped", "publish_audience": "skipped"}
    with clean_db.connect() as conn:
        run_row = conn.execute(text("select status::text, campaign_name from campaign.campaign_run")).one()
        steps = conn.execute(
            text("select step, count_out from campaign.waterfall_step order by position")
        ).all()
        frozen = conn.execute(text("select count(*) from campaign.audience")).scalar_one()
    assert tuple(run_row) == ("dry_run", "adhoc")
    assert steps[1] == ("selection", 50) and frozen == 0


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    """Airflow's API server (core API only) on the tests' metadata database, on a free port."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import time

    import httpx

    from campaign_lib.airflow_runtime import airflow_command

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AIRFLOW__API__PORT=str(port), AIRFLOW__API__BASE_URL=base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    log = (tmp_path_factory.mktemp("api") / "api-server.log").open("w")
    server = subprocess.Popen(
        airflow_command("api-server", "--port", str(port), "--apps", "core", "--workers", "1"),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the API server did not start"
            time.sleep(1)
        passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        yield {"host": base, "login": "admin", "password": json.loads(passwords.read_text())["admin"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


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
