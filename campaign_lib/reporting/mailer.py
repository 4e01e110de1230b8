"""A campaign report by email: the HTML report inline, the PDF attached, the headline as text.

The message is sent over the SMTP relay of the Airflow connection `kms_smtp` (a mapping in
Airflow's connection shape) with the email connector (connectors.email), which handles
STARTTLS/TLS, authentication and the relay's refusals. A report goes to a handful of
people, so the `email` package's ~3 ms per message does not matter here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path

from campaign_lib.errors import ConfigError

_ADDRESS_SHAPE = "@"


def report_message(
    html_path: Path, recipients: Sequence[str], sender: str, sender_name: str = ""
) -> EmailMessage:
    """The email of a rendered report (`run_<id>.html` with its `.pdf` and `.json` beside it)."""
    summary = json.loads(html_path.with_suffix(".json").read_text(encoding="utf-8"))
    message = EmailMessage()
    campaign = summary["campaign_name"].replace("_", " ")
    provisional = " (provisional)" if summary["provisional"] else ""
    message["Subject"] = f"Campaign report: {campaign}, run {summary['campaign_run_id']}{provisional}"
    message["From"] = formataddr((sender_name, sender)) if sender_name else sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    text = "\n".join(f"- {sentence}" for sentence in summary["headline"])
    message.set_content(f"{text}\n\nThe full report is attached as a PDF.\n")
    message.add_alternative(html_path.read_text(encoding="utf-8"), subtype="html")
    message.add_attachment(
        html_path.with_suffix(".pdf").read_bytes(),
        maintype="application",
        subtype="pdf",
        filename=f"{summary['campaign_name']}_run_{summary['campaign_run_id']}.pdf",
    )
    return message


@dataclass(frozen=True)
class SentReport:
    """What the relay did with a report: its subject, and the recipients it refused (with
    the reply)."""

    subject: str
    refused: dict[str, str]


def email_report(html_path: Path, recipients: Sequence[str], connection: Mapping[str, object]) -> SentReport:
    """Send the rendered report at `html_path` to `recipients` through the SMTP relay of
    `connection` (kms_smtp's fields). ConfigError for no or malformed recipients;
    DeliveryError when the relay cannot be reached or refuses everyone."""
    from connectors.email import EmailConnector

    if not recipients:
        raise ConfigError("a report needs at least one recipient")
    malformed = [r for r in recipients if _ADDRESS_SHAPE not in r or "\n" in r or "," in r]
    if malformed:
        raise ConfigError(f"not an email address: {', '.join(map(repr, malformed))}")
    with EmailConnector.from_connection(connection) as connector:
        message = report_message(
            html_path, recipients, connector.settings.from_address, connector.settings.from_name
        )
        # SMTP wants CRLF line ends; smtplib does not convert those of bytes.
        refused = connector.send_raw(list(recipients), message.as_bytes(policy=policy.SMTP))
    return SentReport(subject=str(message["Subject"]), refused=refused)
