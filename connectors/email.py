"""The email connector: SMTP with one reused connection per batch and an outcome per recipient.

    connector = EmailConnector.from_connection(conn)     # the Airflow connection kms_smtp as a dict
    for outcome in connector.send(batch):                # one Outcome per Outbound, as soon as known
        ...
    connector.close()

Connection `kms_smtp`: host, port, login and password (AUTH when a login is set), and extra:

    security          "starttls" (default), "tls" (implicit TLS, port 465) or "none"
    from              sender address (required), e.g. newsletter@resort-example.de
    from_name         sender display name (default: KMS_SENDER_NAME or the resort's name)
    timeout           seconds per SMTP command (default 30)
    retry_after       seconds until a soft failure is worth another try (default 300)
    ca_cert           PEM of a CA (or the self-signed certificate) to trust besides the system's
    dkim_selector, dkim_domain, dkim_private_key   sign every message with DKIM (PEM key text)

Replies map to outcomes (the enhanced status code decides 5.7.x):

    250 after the message                     sent (provider_message_id = the Message-ID)
    421, or the server hanging up before the  reconnect and try the message once more; then
      message was handed over                 failed_soft
    other 4xx                                 failed_soft, retry_after
    5xx with enhanced code 5.7.x, or 5xx to   failed_soft with pause_run: a policy or reputation
      MAIL FROM (the sender is refused)       block is the sender's problem, not the person's
    other 5xx                                 failed_hard
    connection lost after the message was     ambiguous: the server may have accepted it, so it is
      sent, before the server's reply         never resent here

MIME bytes come from campaign_lib.rendering.mime (no `email` package on the hot path) and the
SMTP transaction is written out (MAIL, RCPT, DATA) rather than `sendmail`, so the connector
knows exactly whether the last byte of a message had left when a connection broke.
"""

from __future__ import annotations

import json
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import dkim

from campaign_lib.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from campaign_lib.rendering.messages import MessageSettings
from campaign_lib.rendering.mime import MimeBuilder, is_valid_address
from connectors.base import Outbound, Outcome

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]
SECURITY_MODES: tuple[Security, ...] = ("starttls", "tls", "none")
DEFAULT_CONN_ID = "kms_smtp"
LOCAL_SMTP_PORT = 8025
LOCAL_SENDER = "newsletter@resort-example.de"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRY_AFTER = 300.0
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)
_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_MASK = "***"


@dataclass(frozen=True)
class DkimKey:
    """What signs outgoing mail: selector and domain name the DNS record, key is PEM text."""

    selector: str
    domain: str
    private_key: str = ""

    def __repr__(self) -> str:
        return f"DkimKey(selector={self.selector!r}, domain={self.domain!r}, private_key={_MASK})"


@dataclass(frozen=True, repr=False)
class SmtpSettings:
    """How to reach the SMTP relay and who sends; secrets never appear in repr."""

    host: str
    port: int
    from_address: str
    from_name: str = ""
    security: Security = "starttls"
    login: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry_after: float = DEFAULT_RETRY_AFTER
    ca_cert: str | None = None
    dkim: DkimKey | None = None

    def __repr__(self) -> str:
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"login={self.login!r}, password={_MASK if self.password else None}, from={self.from_address!r})"
        )

    @classmethod
    def from_connection(cls, conn: Mapping[str, object]) -> SmtpSettings:
        """Settings from an Airflow-connection-like mapping (host, port, login, password, extra).

        Raises ConfigError naming the field when a value cannot work."""
        extra = conn.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"{DEFAULT_CONN_ID}: extra must be a JSON object")
        security = str(extra.get("security") or "starttls")
        if security not in SECURITY_MODES:
            raise ConfigError(f"{DEFAULT_CONN_ID}: extra.security must be one of {', '.join(SECURITY_MODES)}")
        host = str(conn.get("host") or "")
        if not host:
            raise ConfigError(f"{DEFAULT_CONN_ID}: host is required")
        sender = str(extra.get("from") or "")
        if not is_valid_address(sender):
            raise ConfigError(f"{DEFAULT_CONN_ID}: extra.from must be the sender's address, not {sender!r}")
        dkim_fields = [extra.get(key) for key in ("dkim_selector", "dkim_domain", "dkim_private_key")]
        if any(dkim_fields) and not all(dkim_fields):
            raise ConfigError(
                f"{DEFAULT_CONN_ID}: DKIM needs dkim_selector, dkim_domain and dkim_private_key"
            )
        try:
            port = int(conn.get("port") or (465 if security == "tls" else 587))
            timeout = float(extra.get("timeout") or DEFAULT_TIMEOUT)
            retry_after = float(extra.get("retry_after") or DEFAULT_RETRY_AFTER)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{DEFAULT_CONN_ID}: port, extra.timeout and extra.retry_after are numbers"
            ) from exc
        return cls(
            host=host,
            port=port,
            from_address=sender,
            from_name=str(extra.get("from_name") or MessageSettings.from_env().sender_name),
            security=security,  # type: ignore[arg-type]
            login=str(conn["login"]) if conn.get("login") else None,
            password=str(conn["password"]) if conn.get("password") else None,
            timeout=timeout,
            retry_after=retry_after,
            ca_cert=str(extra["ca_cert"]) if extra.get("ca_cert") else None,
            dkim=DkimKey(*(str(value) for value in dkim_fields)) if all(dkim_fields) else None,
        )

    def tls_context(self) -> ssl.SSLContext:
        """A verifying TLS context; trusts `ca_cert` in addition to the system's CAs."""
        context = ssl.create_default_context()
        if self.ca_cert:
            context.load_verify_locations(cadata=self.ca_cert)
        return context


class _Reconnect(Exception):
    """The server closed the session before the message was handed over: safe to send again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmailConnector:
    """Sends `Outbound` emails over one SMTP session, reconnecting when the server drops it."""

    channel = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.builder = MimeBuilder(settings.from_address, settings.from_name)
        if settings.dkim is not None:
            self._check_dkim_key(settings.dkim)
        self._smtp: smtplib.SMTP | None = None
        self._utf8 = False
        self.connections_opened = 0

    @classmethod
    def from_connection(cls, conn: Mapping[str, object]) -> EmailConnector:
        """The connector for an Airflow-connection-like mapping (see SmtpSettings.from_connection)."""
        return cls(SmtpSettings.from_connection(conn))

    def __enter__(self) -> EmailConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, batch: Sequence[Outbound]) -> Iterator[Outcome]:
        """Send each message; yield its Outcome before the next one is started.

        Raises TransientDeliveryError when the server cannot be reached (or reached again after
        it hung up), PermanentDeliveryError when it refuses TLS or the credentials; every
        message before that has had its Outcome."""
        for message in batch:
            yield self.send_one(message)

    def send_one(self, message: Outbound) -> Outcome:
        """The Outcome of sending one message (see the module docstring for the mapping)."""
        if not is_valid_address(message.address):
            return Outcome(message.message_id, "failed_hard", reason="not a deliverable email address")
        data = self.message_bytes(message)
        reason = ""
        for _attempt in range(2):
            if self._smtp is None:
                self._connect()
            try:
                return self._transaction(message, data)
            except _Reconnect as exc:
                reason = exc.reason
                self._disconnect()
        return Outcome(
            message.message_id,
            "failed_soft",
            reason=f"{reason} (twice; reconnected once)",
            retry_after=self.settings.retry_after,
        )

    def _check_dkim_key(self, key: DkimKey) -> None:
        """Sign a probe once, so a key that cannot sign fails at start, not on every message."""
        probe = self.builder.build(
            to=self.settings.from_address, subject="probe", text="probe", html=None, message_key="dkim-probe"
        )
        try:
            self._sign(probe, key)
        except (dkim.DKIMException, ValueError) as exc:
            raise ConfigError(f"{DEFAULT_CONN_ID}: extra.dkim_private_key cannot sign: {exc}") from exc

    def message_bytes(self, message: Outbound) -> bytes:
        """The MIME bytes of a message, DKIM-signed when a key is configured."""
        data = self.builder.build(
            to=message.address,
            subject=message.subject or "",
            text=message.text,
            html=message.html,
            message_key=message.message_key,
            headers=message.headers,
        )
        key = self.settings.dkim
        return data if key is None else self._sign(data, key)

    @staticmethod
    def _sign(data: bytes, key: DkimKey) -> bytes:
        signature = dkim.sign(
            data,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private_key.encode("ascii"),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(DKIM_HEADERS),
        )
        return signature + data

    def send_raw(self, recipients: Sequence[str], data: bytes) -> dict[str, str]:
        """Send one ready message (e.g. a report built with the `email` package) from the
        configured sender to `recipients` over this connector's session (bare LF line ends, as
        EmailMessage.as_bytes() writes them, become CRLF); returns the replies
        of the recipients that were refused while the others got it ({} when all did).
        Raises TransientDeliveryError for a 4xx or a lost connection, PermanentDeliveryError
        for a 5xx, when nobody got the message."""
        if self._smtp is None:
            self._connect()
        assert self._smtp is not None
        try:
            refused = self._smtp.sendmail(
                self.settings.from_address, list(recipients), _BARE_LF.sub(b"\r\n", data)
            )
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset()
            refused = "; ".join(
                f"{rcpt}: {code} {reply.decode('utf-8', 'replace')}"
                for rcpt, (code, reply) in exc.recipients.items()
            )
            transient = all(400 <= code < 500 for code, _reply in exc.recipients.values())
            raise (TransientDeliveryError if transient else PermanentDeliveryError)(
                f"refused: {refused}"
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            error = TransientDeliveryError if 400 <= exc.smtp_code < 500 else PermanentDeliveryError
            raise error(f"refused: {_reply(exc)}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._disconnect()
            raise TransientDeliveryError(f"connection lost while sending: {exc}") from exc
        return {rcpt: f"{code} {reply.decode('utf-8', 'replace')}" for rcpt, (code, reply) in refused.items()}

    def close(self) -> None:
        """Say QUIT and close the connection (if one is open)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _connect(self) -> None:
        settings = self.settings
        where = f"SMTP server {settings.host}:{settings.port}"
        smtp: smtplib.SMTP | None = None
        try:
            if settings.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    settings.host, settings.port, timeout=settings.timeout, context=settings.tls_context()
                )
            else:
                smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
            smtp.ehlo()
            if settings.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise PermanentDeliveryError(
                        f"{where} does not offer STARTTLS (extra.security is starttls)"
                    )
                smtp.starttls(context=settings.tls_context())
                smtp.ehlo()
            if settings.login:
                smtp.login(settings.login, settings.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _close_quietly(smtp)
            raise PermanentDeliveryError(
                f"{where} refused the credentials of {settings.login!r}: {_reply(exc)}"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            _close_quietly(smtp)
            raise PermanentDeliveryError(
                f"{where}: TLS certificate not trusted: {exc.verify_message}"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            _close_quietly(smtp)
            raise PermanentDeliveryError(f"{where}: {exc}") from exc
        except PermanentDeliveryError:
            _close_quietly(smtp)
            raise
        except (smtplib.SMTPException, OSError) as exc:
            _close_quietly(smtp)
            raise TransientDeliveryError(f"{where} cannot be reached: {exc}") from exc
        self._smtp = smtp
        self._utf8 = smtp.has_extn("smtputf8")
        self.connections_opened += 1

    def _disconnect(self) -> None:
        smtp, self._smtp = self._smtp, None
        _close_quietly(smtp)

    def _transaction(self, message: Outbound, data: bytes) -> Outcome:
        smtp = self._smtp
        assert smtp is not None
        options = []
        if not message.address.isascii():
            if not self._utf8:
                return Outcome(
                    message.message_id,
                    "failed_hard",
                    reason="the address is not ASCII and the server does not offer SMTPUTF8",
                )
            options.append("SMTPUTF8")
        handed_over = False
        try:
            code, reply = smtp.mail(self.settings.from_address, options)
            if code != 250:
                return self._refused(message, "MAIL FROM", code, reply)
            code, reply = smtp.rcpt(message.address)
            if code not in (250, 251):
                return self._refused(message, "RCPT TO", code, reply)
            code, reply = smtp.docmd("data")
            if code != 354:
                return self._refused(message, "DATA", code, reply)
            handed_over = True
            smtp.send(_LEADING_DOT.sub(b"..", data) + b".\r\n")
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if handed_over:
                self._disconnect()
                return Outcome(
                    message.message_id,
                    "ambiguous",
                    provider_message_id=self.builder.message_id(message.message_key),
                    reason=f"connection lost after the message was sent, before the server answered: {exc}",
                )
            raise _Reconnect(f"server hung up: {exc}") from exc
        if code == 250:
            return Outcome(
                message.message_id, "sent", provider_message_id=self.builder.message_id(message.message_key)
            )
        return self._refused(message, "end of DATA", code, reply)

    def _refused(self, message: Outbound, stage: str, code: int, reply: bytes) -> Outcome:
        """The Outcome of a refusal; resets the session (or reconnects on 421)."""
        text = reply.decode("utf-8", "replace")
        reason = f"{stage}: {code} {text}"
        if code == 421 or code == -1:
            raise _Reconnect(reason)
        self._reset()
        enhanced = _ENHANCED.match(reply)
        policy = code >= 500 and (
            (enhanced is not None and enhanced.group(1) == b"5" and enhanced.group(2) == b"7")
            or stage == "MAIL FROM"
        )
        if 400 <= code < 500 or policy:
            return Outcome(
                message.message_id,
                "failed_soft",
                reason=reason,
                retry_after=self.settings.retry_after,
                pause_run=policy,
            )
        if code >= 500:
            return Outcome(message.message_id, "failed_hard", reason=reason)
        return Outcome(
            message.message_id,
            "failed_soft",
            reason=f"unexpected reply, {reason}",
            retry_after=self.settings.retry_after,
        )

    def _reset(self) -> None:
        smtp = self._smtp
        if smtp is None:
            return
        try:
            code, _reply = smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._disconnect()


def smtp_connection_from_env(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The connection kms_smtp outside Airflow (the `kms` command line): AIRFLOW_CONN_KMS_SMTP in
    Airflow's JSON form when set, else the local sink on 127.0.0.1:KMS_SMTP_PORT (default 8025)."""
    env = os.environ if environ is None else environ
    raw = env.get("AIRFLOW_CONN_KMS_SMTP")
    if raw:
        try:
            conn = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError("AIRFLOW_CONN_KMS_SMTP must be Airflow's JSON form of a connection") from exc
        if not isinstance(conn, dict):
            raise ConfigError("AIRFLOW_CONN_KMS_SMTP must be a JSON object")
        if isinstance(conn.get("extra"), str):
            conn["extra"] = json.loads(conn["extra"])
        return conn
    port = env.get("KMS_SMTP_PORT") or str(LOCAL_SMTP_PORT)
    return {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"security": "none", "from": LOCAL_SENDER},
    }


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace')}"


def _close_quietly(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            log.debug("closing the SMTP socket failed", exc_info=True)
