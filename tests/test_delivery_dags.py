"""Delivery in the campaign DAGs, run with dag.test() against the test database, the local SMTP
server and the SMS emulator: the audience is delivered once, and a rerun of the same DAG run
(every task cleared and run again) sends nothing more."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from servers_smtp import smtp_connection
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.local_servers.smtp import LocalSmtpServer

CAMPAIGN = """\
name: {name}
description: Delivery test campaign
owner: test@resort.example
selection: {{name: everyone, params: {{}}}}
offer: {{sku: WP-DAY-HOTEL, name: eine Tageskarte für die Wasserwelt}}
purpose: newsletter
channels: [email, sms]
templates:
  email: {{subject: "Hallo {{{{ first_name }}}}", html: messages/water_park_for_hotel_guests/email.html.j2,
           text: messages/water_park_for_hotel_guests/email.txt.j2}}
  sms: {{text: messages/water_park_for_hotel_guests/sms.txt.j2}}
schedule: null
control_share: 0.2
costs: {{per_message: {{email: 0.002, sms: 0.075}}}}
"""
WHEN = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
def campaign_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: LocalSmtpServer, sms_conn: dict
) -> Path:
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "winter_offer.yaml").write_text(CAMPAIGN.format(name="winter_offer"), encoding="utf-8")
    selections = tmp_path / "selections"
    selections.mkdir()
    (selections / "everyone.sql").write_text(
        "-- description: Every active contact\nselect contact_id from core.contact\n", encoding="utf-8"
    )
    shutil.copytree(PROJECT_ROOT / "templates", tmp_path / "templates")
    monkeypatch.setenv("KMS_CAMPAIGNS_DIR", str(campaigns))
    monkeypatch.setenv("KMS_SELECTIONS_DIR", str(selections))
    monkeypatch.setenv("KMS_TEMPLATES_DIR", str(tmp_path / "templates"))
    # The outbox's own settings travel in the connection's extra.
    outbox = {"workers": 2, "chunk": 4, "messages_per_second": 500}
    monkeypatch.setenv("AIRFLOW_CONN_KMS_SMTP", json.dumps(smtp_connection(smtp_server, outbox=outbox)))
    monkeypatch.setenv("AIRFLOW_CONN_KMS_SMS", json.dumps(sms_conn))
    monkeypatch.setenv(
        "AIRFLOW_CONN_KMS_TRACKING",
        json.dumps({"conn_type": "http", "host": "http://127.0.0.1:8790/kms", "password": "d" * 40}),
    )
    return tmp_path


def guests(engine: Engine, email: int, sms: int) -> None:
    """`email` guests reachable by email and `sms` more reachable by SMS only."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into core.account (account_type) select 'household' from generate_series(1, :n);"
                "insert into core.contact (account_id, first_name, email, phone_e164) "
                "select account_id, 'G' || account_id, "
                "       case when account_id <= :email then 'g' || account_id || '@example.org' end, "
                "       case when account_id > :email then '+49151' || lpad(account_id::text, 8, '0') end "
                "from core.account;"
                "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
                "select contact_id, case when email is null then 'sms' else 'email' end::core.channel, "
                "'newsletter', 'opt_in', now() - interval '1 day', 'website' from core.contact"
            ),
            {"n": email + sms, "email": email},
        )


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def run_messages(engine: Engine) -> Counter[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("select channel::text, status::text from campaign.message"))
        return Counter(tuple(row) for row in rows)


def test_a_campaign_dag_delivers_its_audience_once_and_a_rerun_sends_nothing(
    campaign_folders: Path, clean_db: Engine, smtp_server: LocalSmtpServer, providers
) -> None:
    guests(clean_db, email=40, sms=10)
    dag = dagbag().dags["kms_campaign_winter_offer"]

    # send_now: the test runs at any hour, inside the campaign's send window or not.
    first = dag.test(logical_date=WHEN, run_after=WHEN, run_conf={"send_now": True})
    states = {ti.task_id: str(ti.state) for ti in first.get_task_instances()}
    finished = first.get_task_instance("finish_delivery").xcom_pull(task_ids="finish_delivery")
    again = dag.test(logical_date=WHEN, run_after=WHEN, run_conf={"send_now": True})

    assert first.state == "success", states
    assert again.state == "success" and again.run_id == first.run_id
    with clean_db.connect() as conn:
        audience = dict(
            conn.execute(text("select cell = 'control', count(*) from campaign.audience group by 1")).all()
        )
        runs = conn.execute(text("select count(*) from campaign.campaign_run")).scalar_one()
        sent_to = conn.execute(
            text("select address from campaign.message where channel = 'email' and status = 'sent'")
        ).scalars()
        expected = Counter(sent_to)
    assert runs == 1 and audience[True] > 0
    messages = run_messages(clean_db)
    assert sum(messages.values()) == audience[False]
    assert set(messages) <= {("email", "sent"), ("sms", "sent")} and messages[("sms", "sent")] > 0
    received = Counter(rcpt for message in smtp_server.messages() for rcpt in message.rcpt_tos)
    assert received == expected and set(received.values()) == {1}
    assert len(providers.messages("sms")) == messages[("sms", "sent")]
    assert finished["status"] == "completed"
    report = Path(first.get_task_instance("render_report").xcom_pull(task_ids="render_report"))
    assert report.is_file() and report.with_suffix(".pdf").is_file()


def test_the_delivery_tasks_follow_the_published_audience(campaign_folders: Path) -> None:
    dag = dagbag().dags["kms_campaign_winter_offer"]

    order = [t.task_id for t in dag.topological_sort()]
    assert order[:5] == [
        "validate",
        "freeze_audience",
        "publish_audience",
        "materialise_outbox",
        "wait_for_send_window",
    ]
    assert order[-2:] == ["finish_delivery", "render_report"]
    assert set(order[5:-2]) == {"plan_email", "plan_sms", "deliver_email", "deliver_sms"}
    assert dag.get_task("deliver_email").upstream_task_ids == {"plan_email", "materialise_outbox"}
    assert dag.get_task("plan_email").upstream_task_ids == {"materialise_outbox", "wait_for_send_window"}
    assert dag.get_task("wait_for_send_window").mode == "reschedule"
    assert dag.params["send_now"] is False
    assert {dag.get_task(f"deliver_{c}").pool for c in ("email", "sms")} == {"kms_email", "kms_sms"}


def test_an_ad_hoc_run_delivers_and_a_dry_run_sends_nothing(
    campaign_folders: Path, clean_db: Engine, smtp_server: LocalSmtpServer
) -> None:
    guests(clean_db, email=20, sms=0)
    dag = dagbag().dags["kms_campaign"]
    choices = {
        "selection": "everyone",
        "template": "water_park_for_hotel_guests",
        "channels": ["email"],
        "offer_sku": "WP-DAY-HOTEL",
    }

    dry = dag.test(run_conf={**choices, "dry_run": True})
    real = dag.test(run_conf={**choices, "dry_run": False, "control_share": 0, "send_now": True})

    dry_states = {ti.task_id: str(ti.state) for ti in dry.get_task_instances()}
    real_states = {ti.task_id: str(ti.state) for ti in real.get_task_instances()}
    assert set(dry_states.values()) == {"skipped"}
    assert real.state == "success", real_states
    assert (real_states["deliver_sms"], real_states["finish_delivery"]) == ("skipped", "success")
    assert run_messages(clean_db) == {("email", "sent"): 20}
    assert len(smtp_server.messages()) == 20


def test_a_run_outside_its_send_window_sends_nothing_until_the_window_opens_or_send_now(
    campaign_folders: Path, clean_db: Engine, smtp_server: LocalSmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.sdk.exceptions import AirflowRescheduleException

    from campaign_lib.airflow_adapter import deliver_task, send_window_task
    from campaign_lib.airflow_delivery import SendWindowSensor

    # Open on every weekday but today and tomorrow (UTC): closed now, at any hour of the day.
    today = datetime.now(UTC)
    days = [day for number, day in enumerate(WEEKDAYS) if (number - today.weekday()) % 7 > 1]
    window = f"send_window: {{start: '09:00', end: '20:00', timezone: UTC, days: [{', '.join(days)}]}}\n"
    (campaign_folders / "campaigns" / "night_offer.yaml").write_text(
        CAMPAIGN.format(name="night_offer") + window, encoding="utf-8"
    )
    guests(clean_db, email=20, sms=0)
    dag = dagbag().dags["kms_campaign_night_offer"]
    sensor = dag.get_task("wait_for_send_window")
    # The sensor pokes every 5 minutes for up to a week; here its first poke is its last, so
    # dag.test() ends (the sensor fails) instead of waiting for the window.
    sensor.timeout = 0

    closed = dag.test(logical_date=WHEN, run_after=WHEN)

    states = {ti.task_id: str(ti.state) for ti in closed.get_task_instances()}
    assert closed.state == "failed", states
    assert (states["materialise_outbox"], states["wait_for_send_window"]) == ("success", "failed")
    after = ("plan_email", "plan_sms", "deliver_email", "deliver_sms", "finish_delivery", "render_report")
    assert {states[task_id] for task_id in after} == {"upstream_failed"}
    pending = run_messages(clean_db)
    assert set(pending) == {("email", "pending")} and smtp_server.messages() == []

    # The sensor's check: the window decides, unless the run's send_now param says otherwise.
    campaign_run_id = closed.get_task_instance("materialise_outbox").xcom_pull(task_ids="materialise_outbox")
    capsys.readouterr()
    poke = SendWindowSensor(task_id="wait_for_send_window", campaign_run_id=campaign_run_id).poke
    assert not poke({"params": {"send_now": False}}).is_done
    assert f"09:00-20:00 UTC, {','.join(days)}); it opens " in capsys.readouterr().out
    opens = datetime.combine(today.date() + timedelta(days=2), time(9), UTC)
    assert send_window_task(campaign_run_id, at=opens - timedelta(seconds=1)) is False
    assert send_window_task(campaign_run_id, at=opens) is True
    assert poke({"params": {"send_now": True}}).is_done

    # A deliver task that runs outside the window anyway (the sensor marked success, a retry, a
    # cleared task) sends nothing: it asks to be rescheduled for when the window opens.
    capsys.readouterr()
    with pytest.raises(AirflowRescheduleException) as waiting:
        deliver_task(campaign_run_id, "email", 0)
    assert waiting.value.reschedule_date == opens
    assert (
        f"{pending[('email', 'pending')]} messages wait for it. The task waits until then (up_for_reschedule); "
        f"to send them now: `kms delivery send {campaign_run_id} --send-now`." in capsys.readouterr().out
    )
    assert run_messages(clean_db) == pending and smtp_server.messages() == []

    # The run triggered again with send_now: its deliver tasks send at once.
    now = dag.test(logical_date=WHEN, run_after=WHEN, run_conf={"send_now": True})

    sent = {ti.task_id: str(ti.state) for ti in now.get_task_instances()}
    assert now.run_id == closed.run_id
    assert now.state == "success", sent
    assert (sent["wait_for_send_window"], sent["render_report"]) == ("success", "success"), sent
    assert run_messages(clean_db) == {("email", "sent"): pending[("email", "pending")]}
    assert len(smtp_server.messages()) == pending[("email", "pending")]


def test_kms_up_sets_the_delivery_pools_from_the_environment(tmp_path: Path) -> None:
    import os
    import subprocess

    from campaign_lib.airflow_runtime import airflow_command, delivery_pools

    pools = delivery_pools({"KMS_POOL_SLOTS_SMS": "5"})
    path = tmp_path / "pools.json"
    path.write_text(json.dumps(pools), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    imported = subprocess.run(
        airflow_command("pools", "import", str(path)), env=env, capture_output=True, text=True
    )
    listed = subprocess.run(
        airflow_command("pools", "list", "-o", "json"), env=env, capture_output=True, text=True
    )

    assert imported.returncode == 0, imported.stderr
    slots = {pool["pool"]: int(pool["slots"]) for pool in json.loads(listed.stdout)}
    assert {name: slots[name] for name in pools} == {"kms_email": 4, "kms_sms": 5, "kms_push": 2}


@pytest.mark.parametrize("value", ["0", "many", "-1"])
def test_pool_slots_must_be_positive_whole_numbers(value: str) -> None:
    from campaign_lib.airflow_runtime import delivery_pools
    from campaign_lib.errors import ConfigError

    with pytest.raises(
        ConfigError, match=f"KMS_POOL_SLOTS_EMAIL must be a positive whole number, not '{value}'"
    ):
        delivery_pools({"KMS_POOL_SLOTS_EMAIL": value})
