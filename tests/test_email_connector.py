"""The email connector against a real SMTP server (aiosmtpd on localhost): an outcome per reply
class, faults in the middle of a batch, TLS and AUTH, DKIM, what the stored .eml files hold,
and proof sends that stay out of campaign.message."""

from __future__ import annotations

import base64
import email
import email.policy
import socket
from datetime import date

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from servers_smtp import SENDER, smtp_connection
from sqlalchemy import text

from campaign_lib.campaign.definition import find_campaign
from campaign_lib.cli import main
from campaign_lib.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from campaign_lib.local_servers.smtp import LocalSmtpServer
from campaign_lib.rendering import load_campaign_templates
from campaign_lib.rendering.proof import send_proofs
from campaign_lib.tracking.tokens import TrackingLinks
from connectors.base import Connector, Outbound
from connectors.email import EmailConnector, SmtpSettings

LINKS = TrackingLinks("http://127.0.0.1:8790/kms", b"s" * 32)
DEMO = "water_park_for_hotel_guests"


def outbound(number: int, address: str | None = None, **fields: object) -> Outbound:
    """A rendered demo email to guest<number>@example.org."""
    key = f"{number:032x}"
    recipient = {"first_name": f"Gast {number}", "salutation": None}
    recipient |= {k: v for k, v in fields.items() if k in ("first_name", "last_name", "salutation")}
    rendered = load_campaign_templates(find_campaign(DEMO).campaign, run_date=date(2026, 6, 1)).render(
        "email", recipient, LINKS, key
    )
    return Outbound(
        message_id=number,
        message_key=key,
        contact_id=number,
        channel="email",
        address=f"guest{number}@example.org" if address is None else address,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        headers=rendered.headers,
    )


def parse(path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def send_all(server: LocalSmtpServer, batch: list[Outbound], **extra: object):
    connector = EmailConnector.from_connection(smtp_connection(server, **extra))
    try:
        return {outcome.message_id: outcome for outcome in connector.send(batch)}, connector
    finally:
        connector.close()


@pytest.mark.parametrize(
    ("fault", "status", "pause_run", "reason"),
    [
        (None, "sent", False, None),
        (
            ("rcpt", "550 5.1.1 <guest1@example.org>: no such user"),
            "failed_hard",
            False,
            "RCPT TO: 550 5.1.1",
        ),
        (("rcpt", "450 4.2.1 mailbox busy"), "failed_soft", False, "RCPT TO: 450 4.2.1"),
        (("rcpt", "554 5.7.1 rejected: sender reputation"), "failed_soft", True, "RCPT TO: 554 5.7.1"),
        (("data", "552 5.3.4 message too big"), "failed_hard", False, "end of DATA: 552 5.3.4"),
        (("data", "451 4.3.0 temporary failure"), "failed_soft", False, "end of DATA: 451 4.3.0"),
        (
            ("data", "550 5.7.350 remote server returned message detected as spam"),
            "failed_soft",
            True,
            "5.7.350",
        ),
        (("data", "421 4.3.2 shutting down"), "sent", False, None),
    ],
    ids=[
        "250",
        "550 rcpt",
        "450 rcpt",
        "554 5.7.1 rcpt",
        "552 data",
        "451 data",
        "550 5.7.x data",
        "421 once",
    ],
)
def test_outcome_per_reply_class(smtp_server, fault, status, pause_run, reason):
    if fault and fault[0] == "rcpt":
        smtp_server.refuse_recipient("guest1@example.org", fault[1])
    elif fault:
        smtp_server.fail_message(1, fault[1], close=fault[1].startswith("421"))
    outcomes, _ = send_all(smtp_server, [outbound(1)], retry_after=120)
    outcome = outcomes[1]
    assert (outcome.status, outcome.pause_run) == (status, pause_run)
    assert outcome.reason is None if reason is None else reason in outcome.reason
    assert outcome.retry_after == (120 if status == "failed_soft" else None)
    assert len(smtp_server.messages()) == (1 if status == "sent" else 0)
    if status == "sent":
        assert outcome.provider_message_id == f"<{1:032x}@resort-example.de>"


def test_550_for_one_recipient_inside_a_batch(smtp_server):
    smtp_server.refuse_recipient("guest3@example.org", "550 5.1.1 no such user")
    outcomes, connector = send_all(smtp_server, [outbound(n) for n in range(1, 7)])
    assert {n: o.status for n, o in outcomes.items()} == {
        1: "sent",
        2: "sent",
        3: "failed_hard",
        4: "sent",
        5: "sent",
        6: "sent",
    }
    assert [m.rcpt_tos for m in smtp_server.messages()] == [
        (f"guest{n}@example.org",) for n in (1, 2, 4, 5, 6)
    ]
    assert connector.connections_opened == 1


def test_421_mid_campaign_reconnects_and_sends_each_message_once(smtp_server):
    smtp_server.fail_message(3, "421 4.3.2 service shutting down", close=True)
    outcomes, connector = send_all(smtp_server, [outbound(n) for n in range(1, 6)])
    assert all(o.status == "sent" for o in outcomes.values())
    assert connector.connections_opened == 2
    received = [m.rcpt_tos[0] for m in smtp_server.messages()]
    assert sorted(received) == [f"guest{n}@example.org" for n in range(1, 6)]


def test_421_twice_in_a_row_is_a_soft_failure_and_the_batch_goes_on(smtp_server):
    smtp_server.fail_message(2, "421 4.7.0 too many connections", close=True)
    smtp_server.fail_message(3, "421 4.7.0 too many connections", close=True)
    outcomes, _ = send_all(smtp_server, [outbound(n) for n in range(1, 4)])
    assert [outcomes[n].status for n in (1, 2, 3)] == ["sent", "failed_soft", "sent"]
    assert "twice" in outcomes[2].reason and outcomes[2].pause_run is False


def test_450_mid_campaign_fails_that_message_softly(smtp_server):
    smtp_server.fail_message(2, "450 4.2.0 try again later")
    outcomes, connector = send_all(smtp_server, [outbound(n) for n in range(1, 5)])
    assert [outcomes[n].status for n in range(1, 5)] == ["sent", "failed_soft", "sent", "sent"]
    assert outcomes[2].retry_after == 300
    assert connector.connections_opened == 1
    assert len(smtp_server.messages()) == 3


def test_connection_dropped_after_data_is_ambiguous_and_not_resent(smtp_server):
    smtp_server.fail_message(2, drop=True)
    outcomes, connector = send_all(smtp_server, [outbound(n) for n in range(1, 4)])
    assert [outcomes[n].status for n in (1, 2, 3)] == ["sent", "ambiguous", "sent"]
    assert outcomes[2].provider_message_id == f"<{2:032x}@resort-example.de>"
    assert "before the server answered" in outcomes[2].reason
    # The server did get message 2 (exactly once): that is why it must not be sent again.
    assert smtp_server.data_received == 3
    assert [m.rcpt_tos[0] for m in smtp_server.messages()] == [f"guest{n}@example.org" for n in (1, 2, 3)]
    assert connector.connections_opened == 2


def test_connection_is_kept_across_send_calls_until_close(smtp_server):
    connector = EmailConnector.from_connection(smtp_connection(smtp_server))
    assert isinstance(connector, Connector)
    try:
        for n in range(1, 4):
            assert [o.status for o in connector.send([outbound(n)])] == ["sent"]
    finally:
        connector.close()
    assert connector.connections_opened == 1


@pytest.mark.parametrize(
    "address",
    ["guest@example.org\r\nRCPT TO:<victim@example.org>", "Guest <guest@example.org>", "no-at-sign", ""],
    ids=["crlf injection", "display name", "no at sign", "empty"],
)
def test_bad_address_fails_hard_without_touching_the_server(smtp_server, address):
    outcomes, connector = send_all(smtp_server, [outbound(1, address=address)])
    assert outcomes[1].status == "failed_hard" and outcomes[1].reason == "not a deliverable email address"
    assert smtp_server.data_received == 0 and connector.connections_opened == 0


def test_hostile_name_adds_no_header_and_no_recipient(smtp_server):
    message = outbound(1, first_name="Eve\r\nBcc: victim@example.org\r\nX-Injected: yes")
    outcomes, _ = send_all(smtp_server, [message])
    assert outcomes[1].status == "sent"
    (stored,) = smtp_server.messages()
    assert stored.rcpt_tos == ("guest1@example.org",)
    parsed = parse(stored.path)
    assert parsed["Bcc"] is None and parsed["X-Injected"] is None
    assert (
        parsed["Subject"]
        == "Eve Bcc: victim@example.org X-Injected: yes, Ihre Tageskarte für die Wasserwelt wartet"
    )


def test_stored_eml_round_trip(smtp_server):
    message = outbound(7, first_name="Jürgen")
    send_all(smtp_server, [message])
    (stored,) = smtp_server.messages()
    assert stored.path.name == "000001.eml" and stored.mail_from == SENDER
    parsed = parse(stored.path)
    assert parsed["Return-Path"] == f"<{SENDER}>" and parsed["Delivered-To"] == "guest7@example.org"
    assert parsed["Subject"] == message.subject
    assert parsed["Message-ID"] == f"<{7:032x}@resort-example.de>"
    assert parsed["List-Unsubscribe"] == f"<{LINKS.unsubscribe_url(message.message_key)}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["From"].addresses[0].addr_spec == SENDER
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == message.text
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == message.html
    assert not parsed.defects


def test_starttls_and_auth(smtp_tls_server):
    outcomes, _ = send_all(smtp_tls_server, [outbound(1)])
    assert outcomes[1].status == "sent"
    assert smtp_tls_server.auth_attempts == [("kms", True)]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"password": "wrong"}, PermanentDeliveryError, "refused the credentials of 'kms'"),
        ({"extra": {"ca_cert": None}}, PermanentDeliveryError, "TLS certificate not trusted"),
        ({"extra": {"security": "none"}}, PermanentDeliveryError, "AUTH extension not supported"),
    ],
    ids=["wrong password", "untrusted certificate", "no starttls"],
)
def test_tls_and_auth_refusals_are_permanent(smtp_tls_server, change, error, message):
    conn = smtp_connection(smtp_tls_server)
    conn = conn | {k: v for k, v in change.items() if k != "extra"}
    conn["extra"] = dict(conn["extra"]) | change.get("extra", {})
    connector = EmailConnector.from_connection(conn)
    with pytest.raises(error, match=message):
        list(connector.send([outbound(1)]))
    connector.close()
    assert smtp_tls_server.messages() == []


def test_starttls_demanded_from_a_server_without_it(smtp_server):
    connector = EmailConnector.from_connection(smtp_connection(smtp_server, security="starttls"))
    with pytest.raises(PermanentDeliveryError, match="does not offer STARTTLS"):
        list(connector.send([outbound(1)]))
    assert smtp_server.messages() == []


def test_implicit_tls(tmp_path):
    with LocalSmtpServer(tmp_path / "mail", security="tls") as server:
        outcomes, _ = send_all(server, [outbound(1)])
        assert outcomes[1].status == "sent" and len(server.messages()) == 1


def test_server_down_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = {"host": "127.0.0.1", "port": port, "extra": {"security": "none", "from": SENDER, "timeout": 2}}
    connector = EmailConnector.from_connection(conn)
    with pytest.raises(TransientDeliveryError, match="cannot be reached"):
        list(connector.send([outbound(1)]))


@pytest.mark.parametrize(
    ("conn", "problem"),
    [
        ({"host": "h", "extra": {"security": "ssl", "from": SENDER}}, "extra.security"),
        ({"host": "h", "extra": {"from": "not an address"}}, "extra.from"),
        ({"extra": {"from": SENDER}}, "host is required"),
        ({"host": "h", "extra": {"from": SENDER, "dkim_selector": "s"}}, "DKIM needs"),
        ({"host": "h", "port": "x", "extra": {"from": SENDER}}, "numbers"),
    ],
    ids=["security", "from", "host", "dkim", "port"],
)
def test_bad_connection_settings(conn, problem):
    with pytest.raises(ConfigError, match=problem):
        SmtpSettings.from_connection(conn)


def test_a_dkim_key_that_cannot_sign_fails_at_start():
    extra = {
        "from": SENDER,
        "dkim_selector": "s",
        "dkim_domain": "resort-example.de",
        "dkim_private_key": "nope",
    }
    with pytest.raises(ConfigError, match="dkim_private_key cannot sign"):
        EmailConnector.from_connection({"host": "h", "extra": extra})


def test_secrets_stay_out_of_repr():
    settings = SmtpSettings.from_connection(
        {
            "host": "h",
            "login": "u",
            "password": "hunter2",
            "extra": {"from": SENDER, "dkim_selector": "s", "dkim_domain": "d", "dkim_private_key": "KEY"},
        }
    )
    assert "hunter2" not in repr(settings) and "KEY" not in repr(settings.dkim)


def test_dkim_signature_verifies(smtp_server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    send_all(
        smtp_server,
        [outbound(1, first_name="Zoë")],
        dkim_selector="kms2026",
        dkim_domain="resort-example.de",
        dkim_private_key=private_pem,
    )
    (stored,) = smtp_server.messages()
    data = stored.path.read_bytes()
    assert data.count(b"DKIM-Signature:") == 1

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"kms2026._domainkey.resort-example.de."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(b"Zo=C3=AB", b"Zoe")
    assert tampered != data and not dkim.verify(tampered, dnsfunc=dns)


@pytest.fixture
def seed_contact(clean_db) -> int:
    with clean_db.begin() as conn:
        conn.execute(text("truncate campaign.proof_send"))
        account = conn.execute(
            text("insert into core.account (account_type) values ('household') returning account_id")
        ).scalar_one()
        return conn.execute(
            text(
                "insert into core.contact (account_id, salutation, first_name, last_name, email) "
                "values (:account, 'Frau', 'Ada', 'Lovelace', 'ada@example.org') returning contact_id"
            ),
            {"account": account},
        ).scalar_one()


def test_proof_sends_are_logged_apart_from_campaign_messages(smtp_server, clean_db, seed_contact):
    loaded = find_campaign(DEMO)
    with EmailConnector.from_connection(smtp_connection(smtp_server)) as connector:
        proofs = send_proofs(
            clean_db, loaded, ["seed1@example.org", "seed2@example.org"], connector, LINKS, seed_contact
        )
    assert [p.status for p in proofs] == ["sent", "sent"]
    subjects = [parse(m.path)["Subject"] for m in smtp_server.messages()]
    assert subjects == ["[Test] Ada, Ihre Tageskarte für die Wasserwelt wartet"] * 2
    assert "Liebe Frau Lovelace," in parse(smtp_server.messages()[0].path).get_body(("plain",)).get_content()
    with clean_db.connect() as conn:
        rows = conn.execute(
            text(
                "select campaign_name, address, status, contact_id, message_key from campaign.proof_send order by 1, 2"
            )
        ).all()
        messages = conn.execute(text("select count(*) from campaign.message")).scalar_one()
    assert [(r.campaign_name, r.address, r.status, r.contact_id) for r in rows] == [
        (DEMO, "seed1@example.org", "sent", seed_contact),
        (DEMO, "seed2@example.org", "sent", seed_contact),
    ]
    assert all(r.message_key.startswith("proof-") for r in rows)
    assert messages == 0
    with pytest.raises(ConfigError, match="must be email addresses"):
        send_proofs(clean_db, loaded, ["x@example.org", "bad address"], connector, LINKS)


def test_cli_template_proof(smtp_server, clean_db, monkeypatch, capsys):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_KMS_SMTP", json.dumps(smtp_connection(smtp_server)))
    monkeypatch.setenv("KMS_TRACKING_SECRET", "t" * 40)
    assert main(["template", "proof", DEMO, "--to", "seed@example.org"]) == 0
    assert "seed@example.org: sent" in capsys.readouterr().out
    (stored,) = smtp_server.messages()
    assert parse(stored.path)["Subject"] == "[Test] Erika, Ihre Tageskarte für die Wasserwelt wartet"


def test_kms_smtp_serve_stores_mail_until_terminated(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kms = Path(sys.executable).with_name("kms")
    server = subprocess.Popen(
        [str(kms), "smtp", "serve", "--port", str(port), "--dir", str(tmp_path / "mail")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"SMTP sink on 127.0.0.1:{port}" in server.stdout.readline()
        conn = {"host": "127.0.0.1", "port": port, "extra": {"security": "none", "from": SENDER}}
        with EmailConnector.from_connection(conn) as connector:
            assert [o.status for o in connector.send([outbound(1)])] == ["sent"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
    assert server.returncode == 0
    assert [p.name for p in (tmp_path / "mail").iterdir()] == ["000001.eml"]


def test_send_raw_sends_a_ready_message_to_several_recipients(smtp_server):
    from email.message import EmailMessage

    report = EmailMessage()
    report["From"], report["To"], report["Subject"] = SENDER, "a@example.org, b@example.org", "ROI report"
    report.set_content("see attachment")
    report.add_attachment(
        bytes(range(256)) * 200, maintype="application", subtype="pdf", filename="report.pdf"
    )
    smtp_server.refuse_recipient("b@example.org", "550 5.1.1 no such user")
    smtp_server.refuse_recipient("c@example.org", "452 4.2.2 mailbox full")
    with EmailConnector.from_connection(smtp_connection(smtp_server)) as connector:
        refused = connector.send_raw(["a@example.org", "b@example.org"], report.as_bytes())
        assert refused == {"b@example.org": "550 5.1.1 no such user"}
        with pytest.raises(PermanentDeliveryError, match=r"b@example\.org: 550"):
            connector.send_raw(["b@example.org"], report.as_bytes())
        with pytest.raises(TransientDeliveryError, match=r"c@example\.org: 452"):
            connector.send_raw(["c@example.org"], report.as_bytes())
        assert connector.send_raw(["a@example.org"], report.as_bytes()) == {}
    assert [m.rcpt_tos for m in smtp_server.messages()] == [("a@example.org",), ("a@example.org",)]
    attachment = parse(smtp_server.messages()[0].path).get_payload()[1]
    assert attachment.get_filename() == "report.pdf" and attachment.get_content() == bytes(range(256)) * 200


def test_internationalised_address_goes_out_with_smtputf8(smtp_server):
    outcomes, _ = send_all(smtp_server, [outbound(1, address="jürgen@beispiel.de")])
    assert outcomes[1].status == "sent"
    (stored,) = smtp_server.messages()
    assert stored.rcpt_tos == ("jürgen@beispiel.de",)
    assert parse(stored.path)["To"] == "jürgen@beispiel.de"
