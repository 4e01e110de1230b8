"""A real SMTP server for the demo, tests and benchmarks: aiosmtpd on 127.0.0.1 in a thread,
storing every message it accepts as an `.eml` file, with faults on demand.

    with LocalSmtpServer(mail_dir) as server:               # plain SMTP on a free port
        server.refuse_recipient("x@example.org", "550 5.1.1 no such user")
        server.fail_message(3, "421 4.3.2 shutting down", close=True)   # the 3rd DATA received
        server.fail_message(5, drop=True)                   # 5th: take it, hang up, never answer
        ...send...
        server.messages()                                   # [StoredMessage(path, mail_from, rcpt_tos)]

    LocalSmtpServer(mail_dir, security="starttls", credentials=("kms", "secret"))
    LocalSmtpServer(mail_dir, security="tls")               # implicit TLS
        server.certificate_pem                              # the self-signed certificate to trust

Stored files are named `<number>.eml` (the number counts on from the files already in the
folder) and begin with `Return-Path` and `Delivered-To` lines, as a mailbox would show them.
A message whose connection is dropped after DATA is stored as well: the point of that fault
is that the server may have accepted a message the client never heard about.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import signal
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Security = Literal["none", "starttls", "tls"]
_NUMBERED = re.compile(r"^(\d+)\.eml$")


@dataclass(frozen=True)
class StoredMessage:
    """One accepted message: its .eml file and its envelope."""

    path: Path
    mail_from: str
    rcpt_tos: tuple[str, ...]


@dataclass(frozen=True)
class _Fault:
    reply: str | None
    close: bool
    drop: bool


@dataclass(frozen=True)
class SelfSignedCertificate:
    """A certificate for 127.0.0.1 and localhost with its key, both PEM text."""

    certificate_pem: str
    key_pem: str


def self_signed_certificate() -> SelfSignedCertificate:
    """A fresh self-signed certificate (P-256, valid for a day) for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii"),
    )


class _Handler:
    def __init__(self, server: LocalSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address: str, rcpt_options) -> str:
        reply = self.server._recipient_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope) -> str:
        fault = self.server._next_message_fault()
        if fault is not None and fault.reply is not None:
            if fault.close:
                asyncio.get_running_loop().call_soon(smtp.transport.close)
            return fault.reply
        stored = self.server._store(envelope)
        if fault is not None and fault.drop:
            smtp.transport.abort()
        return f"250 2.0.0 Ok: queued as {stored.path.stem}"


class _Session(Session):
    # aiosmtpd 1.4.6 itself sets its deprecated `login_data` property on every successful AUTH,
    # which warns (an error in the tests); a plain attribute takes the value silently.
    login_data = None


class _SMTP(SMTP):
    def _create_session(self) -> Session:
        return _Session(self.loop)


class _Controller(Controller):
    """aiosmtpd's controller on a port chosen by the system (port 0), without the deprecated
    login_data warning."""

    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class LocalSmtpServer:
    """An aiosmtpd server on 127.0.0.1 that stores accepted mail in `mail_dir` (see module doc)."""

    def __init__(
        self,
        mail_dir: Path,
        *,
        port: int = 0,
        security: Security = "none",
        credentials: tuple[str, str] | None = None,
        certificate: SelfSignedCertificate | None = None,
    ) -> None:
        if credentials and security != "starttls":
            # aiosmtpd 1.4 offers AUTH only after STARTTLS (it does not see implicit TLS as TLS).
            raise ValueError("AUTH is served with security 'starttls' only: passwords never travel in clear")
        self.mail_dir = Path(mail_dir)
        self.security = security
        self.credentials = credentials
        self.certificate = certificate or (self_signed_certificate() if security != "none" else None)
        self._port = port
        self._lock = threading.Lock()
        self._stored: list[StoredMessage] = []
        self._recipient_replies: dict[str, str] = {}
        self._message_faults: dict[int, _Fault] = {}
        self._data_count = 0
        self._next_number = 0
        self.auth_attempts: list[tuple[str, bool]] = []
        self._controller: _Controller | None = None

    def __enter__(self) -> LocalSmtpServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the server is not running")
        return self._controller.port

    @property
    def certificate_pem(self) -> str | None:
        return self.certificate.certificate_pem if self.certificate else None

    @property
    def data_received(self) -> int:
        """How many messages were sent to this server (DATA completed), accepted or not."""
        with self._lock:
            return self._data_count

    def start(self) -> None:
        """Listen and serve in a background thread."""
        if self._controller is not None:
            return
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in self.mail_dir.iterdir() if (m := _NUMBERED.match(p.name))]
        self._next_number = max(numbers, default=0)
        context = self._tls_context()
        options: dict[str, object] = {"enable_SMTPUTF8": True, "decode_data": False}
        if self.security == "starttls":
            options |= {"tls_context": context, "require_starttls": True}
        if self.credentials:
            options |= {"authenticator": self._authenticate, "auth_required": True}
        self._controller = _Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self._port,
            ssl_context=context if self.security == "tls" else None,
            **options,
        )
        self._controller.start()

    def stop(self) -> None:
        """Stop serving (stored files stay)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def refuse_recipient(self, address: str, reply: str) -> None:
        """Answer RCPT TO `address` with `reply` (e.g. "550 5.1.1 no such user") from now on."""
        with self._lock:
            self._recipient_replies[address.lower()] = reply

    def fail_message(
        self, number: int, reply: str | None = None, *, close: bool = False, drop: bool = False
    ) -> None:
        """Fault for the `number`-th message received (counting every DATA since start, from 1):
        answer `reply` instead of accepting it (and hang up after it with close=True), or with
        drop=True store it and hang up without any answer."""
        if (reply is None) == (not drop):
            raise ValueError("give either a reply or drop=True")
        with self._lock:
            self._message_faults[number] = _Fault(reply, close, drop)

    def messages(self) -> list[StoredMessage]:
        """Every message accepted so far, oldest first."""
        with self._lock:
            return list(self._stored)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.certificate is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # load_cert_chain reads files only; the files live just long enough to be read.
        with tempfile.TemporaryDirectory(prefix="kms-smtp-cert-") as folder:
            cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert.write_text(self.certificate.certificate_pem)
            key.write_text(self.certificate.key_pem)
            key.chmod(0o600)
            context.load_cert_chain(cert, key)
        return context

    def _authenticate(self, smtp, session, envelope, mechanism: str, auth_data) -> AuthResult:
        accepted = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and (auth_data.login.decode("utf-8", "replace"), auth_data.password.decode("utf-8", "replace"))
            == self.credentials
        )
        login = auth_data.login.decode("utf-8", "replace") if isinstance(auth_data, LoginPassword) else ""
        with self._lock:
            self.auth_attempts.append((login, accepted))
        return AuthResult(success=accepted, handled=False)

    def _recipient_reply(self, address: str) -> str | None:
        with self._lock:
            return self._recipient_replies.get(address.lower())

    def _next_message_fault(self) -> _Fault | None:
        with self._lock:
            self._data_count += 1
            return self._message_faults.pop(self._data_count, None)

    def _store(self, envelope) -> StoredMessage:
        with self._lock:
            self._next_number += 1
            path = self.mail_dir / f"{self._next_number:06d}.eml"
            head = f"Return-Path: <{envelope.mail_from}>\r\n" + "".join(
                f"Delivered-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos
            )
            path.write_bytes(head.encode("utf-8") + envelope.original_content)
            stored = StoredMessage(path, envelope.mail_from, tuple(envelope.rcpt_tos))
            self._stored.append(stored)
        return stored


def serve_forever(mail_dir: Path, *, port: int) -> None:
    """Serve plain SMTP on 127.0.0.1:`port` into `mail_dir` until SIGTERM or SIGINT (the demo's
    sink); says where once it listens."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with LocalSmtpServer(mail_dir, port=port) as server:
        print(
            f"SMTP sink on 127.0.0.1:{server.port}, every accepted message stored as .eml in {mail_dir}",
            flush=True,
        )
        stopped.wait()
