"""End to end: generated exports on a real SFTP server, the ingestion and identity DAGs
run with dag.test() against the test database, and every row accounted for."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.demo import drop_files
from campaign_lib.generator import generate
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.local_servers.sftp import LocalSftpServer, generate_key

USER = "resort-drops"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated") / "drop"
    generate(out, guests=300, seed=7)
    return out


@pytest.fixture
def sftp(
    tmp_path: Path, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalSftpServer, Path]]:
    root = tmp_path / "sftp"
    drop_files(generated, root, load_feeds())
    password = secrets.token_urlsafe(12)
    with LocalSftpServer(root, username=USER, password=password) as server:
        connection = {
            "conn_type": "sftp",
            "host": "127.0.0.1",
            "port": server.port,
            "login": USER,
            "password": password,
            "extra": {"known_hosts": server.known_hosts_line()},
        }
        monkeypatch.setenv("AIRFLOW_CONN_KMS_SFTP", json.dumps(connection))
        yield server, root


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    from campaign_lib.config import PROJECT_ROOT

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def manifest_rows(generated: Path) -> dict[str, int]:
    manifest = json.loads((generated / "manifest.json").read_text())
    rows: dict[str, int] = {}
    for entry in manifest["files"]:
        if entry["feed"] != "ground_truth":
            rows[entry["feed"]] = rows.get(entry["feed"], 0) + entry["rows"]
    return rows


def ledger(engine: Engine) -> dict[str, tuple[int, int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select feed, sum(rows_received), sum(rows_loaded), sum(rows_quarantined) "
                "from ingest.file group by feed"
            )
        ).all()
    return {
        feed: (int(received), int(loaded), int(quarantined)) for feed, received, loaded, quarantined in rows
    }


def task_states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_ingestion_loads_every_row_once_and_identity_builds_the_customer_view(
    dagbag, sftp, generated: Path, clean_db: Engine, tmp_path: Path
) -> None:
    _server, root = sftp
    run = dagbag.dags["kms_ingest_sftp"].test()
    assert run.state == "success", task_states(run)

    expected = manifest_rows(generated)
    for feed, (received, loaded, quarantined) in ledger(clean_db).items():
        assert received == expected[feed], feed
        assert loaded + quarantined == received, feed
    assert set(ledger(clean_db)) == set(expected)
    with clean_db.connect() as conn:
        records = conn.execute(text("select count(*) from ingest.record")).scalar_one()
        products = conn.execute(text("select count(*) from core.product")).scalar_one()
    loaded = {feed: rows for feed, (_, rows, _) in ledger(clean_db).items()}
    # The catalogue goes to core.product, every other feed to the source records.
    assert products == loaded.pop("products") > 0
    assert records == sum(loaded.values())
    assert not [p for p in root.rglob("*") if p.is_file() and p.parent.name != "processed"]

    again = dagbag.dags["kms_ingest_sftp"].test()
    assert again.state == "success"
    assert task_states(again)["publish"] == "skipped"

    identity = dagbag.dags["kms_identity"].test()
    assert identity.state == "success", task_states(identity)
    with clean_db.connect() as conn:
        contacts = conn.execute(
            text("select count(*) from core.contact where status = 'active'")
        ).scalar_one()
        activities = conn.execute(text("select count(*) from core.activity")).scalar_one()
    assert 0 < contacts < records
    assert activities > 0
    catalogue_push_tokens_and_the_funnel_work_on_the_loaded_data(clean_db, tmp_path / "selections")


def catalogue_push_tokens_and_the_funnel_work_on_the_loaded_data(engine: Engine, selections: Path) -> None:
    """The product catalogue links tickets to products, push subscriptions become push
    tokens with push consent, SMS sign-ups bring their phone, and the funnel's "already
    bought" step removes exactly the reachable people who bought the offer."""
    with engine.connect() as conn:
        offer = conn.execute(text("select name, category from core.product where sku = 'WP-DAY-HOTEL'")).one()
        tickets = conn.execute(
            text(
                "select count(*), count(product_id) from core.activity "
                "where activity_type in ('water_park_ticket', 'dolphinarium_ticket')"
            )
        ).one()
        push = conn.execute(
            text(
                "select count(*) from core.identifier i join core.consent c using (contact_id) "
                "where i.kind = 'push_token' and c.channel = 'push' and c.status = 'opt_in'"
            )
        ).scalar_one()
        sms = conn.execute(
            text(
                "select count(*) from core.consent c join core.identifier i using (contact_id) "
                "where c.channel = 'sms' and i.kind = 'phone'"
            )
        ).scalar_one()
        buyers = set(
            conn.execute(
                text(
                    "select distinct a.contact_id from core.activity a join core.product p using (product_id) "
                    "where p.sku = 'WP-DAY-HOTEL'"
                )
            ).scalars()
        )
    assert offer == ("Wasserwelt Tageskarte Hotelgast", "water_park")
    assert tickets[0] > 0 and tickets[1] == tickets[0], "every ticket points to its product"
    assert push > 0 and sms > 0 and buyers

    waterfall, dropped = funnel_of_everyone(engine, selections, offer_sku="WP-DAY-HOTEL")
    already_bought = {contact for contact, step in dropped.items() if step == "already_bought"}
    audience = {contact for contact, step in dropped.items() if step is None}
    steps = {step.step: step for step in waterfall.steps}
    assert already_bought and already_bought <= buyers and not audience & buyers
    assert steps["already_bought"].removed == len(already_bought)


def funnel_of_everyone(engine: Engine, selections: Path, offer_sku: str):
    """The funnel of a newsletter campaign to every contact; the waterfall and each
    selected contact's dropping step (None: in the audience)."""
    import datetime as dt

    from campaign_lib.campaign.funnel import STEPS, FunnelSpec, drop_work_tables, run_funnel
    from campaign_lib.selection import load_selection

    spec = FunnelSpec(
        campaign="ingest_test",
        channels=("email", "sms", "push"),
        purpose="newsletter",
        offer_sku=offer_sku,
        max_per_channel=9,
        max_total=9,
    )
    selections.mkdir()
    (selections / "everyone.sql").write_text(
        "-- description: Every contact\nselect contact_id from core.contact\n", encoding="utf-8"
    )
    with pytest.MonkeyPatch.context() as patch, engine.connect() as conn:
        patch.setenv("KMS_SELECTIONS_DIR", str(selections))
        try:
            waterfall = run_funnel(conn, spec, load_selection("everyone"), {}, dt.datetime.now(dt.UTC))
            rows = conn.execute(text("select contact_id, dropped_at from pg_temp.funnel_contact")).all()
            conn.commit()
        finally:
            drop_work_tables(conn)
    return waterfall, {contact: STEPS[step - 1] if step else None for contact, step in rows}


def test_a_truncated_file_turns_the_run_red_and_the_rest_still_loads(dagbag, sftp, clean_db: Engine) -> None:
    _server, root = sftp
    broken = root / "ticketing" / "tickets_export_2026-11-01_0401.csv"
    broken.write_text('"ticket_id","order_id"\n"T1","O1', encoding="utf-8")

    run = dagbag.dags["kms_ingest_sftp"].test()

    states = task_states(run)
    assert run.state == "failed"
    assert states["check_quarantine"] == "failed"
    assert states["publish"] == "success"
    assert (root / "ticketing" / "failed" / broken.name).exists()
    with clean_db.connect() as conn:
        status, error = conn.execute(
            text("select status, error from ingest.file where name = :n"), {"n": broken.name}
        ).one()
        merged = conn.execute(text("select count(*) from ingest.file where status = 'merged'")).scalar_one()
    assert status == "quarantined"
    assert error
    assert merged > 0


def test_a_changed_host_key_fails_fast_without_sending_credentials(
    dagbag, sftp, monkeypatch: pytest.MonkeyPatch, clean_db: Engine
) -> None:
    server, _root = sftp
    impostor = json.loads(os.environ["AIRFLOW_CONN_KMS_SFTP"])
    impostor["extra"]["known_hosts"] = server.known_hosts_line(generate_key())
    monkeypatch.setenv("AIRFLOW_CONN_KMS_SFTP", json.dumps(impostor))

    run = dagbag.dags["kms_ingest_sftp"].test()

    assert run.state == "failed"
    assert server.auth_attempts == []
    with clean_db.connect() as conn:
        assert conn.execute(text("select count(*) from ingest.file")).scalar_one() == 0


def test_the_demo_loads_all_feeds_in_worker_processes_largest_first(
    sftp, generated: Path, clean_db: Engine, kms_url
) -> None:
    """`ingest_all` (demo and benchmark): two feeds at a time in processes of their own, as Airflow
    runs its tasks; every row accounted for, outcomes in the feeds' order."""
    from campaign_lib.demo import ingest_all
    from campaign_lib.ingest.sftp_ingest import waiting_bytes
    from connectors.sftp import SftpSettings

    server, root = sftp
    connection = json.loads(os.environ["AIRFLOW_CONN_KMS_SFTP"])
    settings = SftpSettings(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        password=connection["password"],
        known_hosts=server.known_hosts_line(),
    )
    feeds = load_feeds()
    sizes = waiting_bytes(settings, feeds)
    assert sizes == {
        name: sum(p.stat().st_size for p in (root / spec.sftp.folder).iterdir() if spec.matches(p.name))
        for name, spec in feeds.items()
    }

    outcomes = ingest_all(kms_url, settings, feeds)

    assert [o.feed for o in outcomes] == sorted((o.feed for o in outcomes), key=list(feeds).index)
    expected = manifest_rows(generated)
    assert {feed: received for feed, (received, _, _) in ledger(clean_db).items()} == expected
    assert sum(o.rows_loaded + o.rows_quarantined for o in outcomes) == sum(expected.values())
    assert not [p for p in root.rglob("*") if p.is_file() and p.parent.name != "processed"]
