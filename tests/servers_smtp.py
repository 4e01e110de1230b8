"""Fixtures: real SMTP servers (aiosmtpd, campaign_lib.local_servers.smtp) on localhost.

    smtp_server          plain SMTP storing every accepted message as .eml under tmp_path/mail
    smtp_tls_server      STARTTLS required, AUTH required (login "kms", password "s3cret"),
                         a self-signed certificate the connection trusts through extra.ca_cert
    smtp_connection(server, **extra)   the Airflow-connection-like dict for EmailConnector

Faults are set on the server object (refuse_recipient, fail_message); see the module of
campaign_lib.local_servers.smtp.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from campaign_lib.local_servers.smtp import LocalSmtpServer

SMTP_LOGIN = "kms"
SMTP_PASSWORD = "s3cret"
SENDER = "newsletter@resort-example.de"


def smtp_connection(server: LocalSmtpServer, **extra: object) -> dict[str, object]:
    """The connection `kms_smtp` for `server` (credentials and CA when the server has them)."""
    settings: dict[str, object] = {"security": server.security, "from": SENDER, "timeout": 10}
    if server.certificate_pem:
        settings["ca_cert"] = server.certificate_pem
    settings |= extra
    login, password = server.credentials or (None, None)
    return {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": server.port,
        "login": login,
        "password": password,
        "extra": settings,
    }


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[LocalSmtpServer]:
    """A plain local SMTP server storing mail in tmp_path/mail."""
    with LocalSmtpServer(tmp_path / "mail") as server:
        yield server


@pytest.fixture
def smtp_tls_server(tmp_path: Path) -> Iterator[LocalSmtpServer]:
    """A local SMTP server that requires STARTTLS and AUTH."""
    with LocalSmtpServer(
        tmp_path / "mail", security="starttls", credentials=(SMTP_LOGIN, SMTP_PASSWORD)
    ) as server:
        yield server
