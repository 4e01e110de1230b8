"""A report by email through a real local SMTP server (STARTTLS and AUTH): HTML inline, PDF attached."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest
from servers_smtp import SENDER, smtp_connection
from sqlalchemy.engine import Engine

from campaign_lib.errors import ConfigError
from campaign_lib.reporting import render_campaign_report
from campaign_lib.reporting.mailer import email_report
from campaign_lib.reporting.synthetic import Truth, build_synthetic_run

KMS = str(Path(sys.executable).parent / "kms")


@pytest.fixture
def report(clean_db: Engine, tmp_path: Path) -> Path:
    run = build_synthetic_run(
        clean_db, campaign_name="summer_offer", people=1000, truth=Truth(0.05, 0.02, 1000), seed=10
    )
    return render_campaign_report(clean_db, run, tmp_path / "reports")


def test_the_report_arrives_with_its_html_inline_and_its_pdf_attached(smtp_tls_server, report: Path) -> None:
    smtp_tls_server.refuse_recipient("gone@resort.example", "550 5.1.1 no such user")

    sent = email_report(
        report, ["ceo@resort.example", "gone@resort.example"], smtp_connection(smtp_tls_server)
    )

    assert sent.refused == {"gone@resort.example": "550 5.1.1 no such user"}
    [stored] = smtp_tls_server.messages()
    assert stored.mail_from == SENDER and stored.rcpt_tos == ("ceo@resort.example",)
    message = email.message_from_bytes(stored.path.read_bytes(), policy=policy.default)
    assert message["Subject"] == "Campaign report: summer offer, run 1"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert text.startswith("- The campaign cost EUR")
    assert html.count("<svg") == 4
    assert attachment.get_filename() == "summer_offer_run_1.pdf"
    assert attachment.get_content().startswith(b"%PDF-")


def test_recipients_are_checked_before_anything_is_sent(smtp_server, report: Path) -> None:
    with pytest.raises(ConfigError, match="at least one recipient"):
        email_report(report, [], smtp_connection(smtp_server))
    with pytest.raises(ConfigError, match=r"not an email address: 'a@b.example\\nBcc: x@y'"):
        email_report(report, ["a@b.example\nBcc: x@y"], smtp_connection(smtp_server))
    assert smtp_server.messages() == []


def test_kms_report_email_renders_and_sends(smtp_server, report: Path) -> None:
    env = {
        **os.environ,
        "KMS_REPORTS_DIR": str(report.parent.parent),
        "AIRFLOW_CONN_KMS_SMTP": json.dumps(smtp_connection(smtp_server)),
    }

    done = subprocess.run(
        [KMS, "report", "email", "--campaign", "summer_offer", "--to", "cfo@resort.example"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "sent 'Campaign report: summer offer, run 1' to cfo@resort.example" in done.stdout
    assert [m.rcpt_tos for m in smtp_server.messages()] == [("cfo@resort.example",)]
