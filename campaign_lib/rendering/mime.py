"""MIME bytes of an email, written directly instead of with the `email` package.

The `email` package costs ~3 ms to build and serialise one multipart message (see
PERFORMANCE_NOTES.md), more than the SMTP round trips it feeds. A campaign's messages all
have the same shape, so a `MimeBuilder` fixes what every message shares once (From, the MIME
skeleton, the part headers) and per recipient only encodes what differs:

- header values: one line each (every CR, LF and control character becomes a space, so no
  value can start a header of its own); pure ASCII as is, anything else, or anything that
  looks like an encoded word, as RFC 2047 UTF-8 encoded words folded to lines under 78;
- the text and HTML parts: quoted-printable with binascii's C encoder. Quoted-printable never
  produces `=_`, so the fixed boundary `=_kms_...` cannot occur inside a part;
- Message-ID `<message_key@sender-domain>`: deterministic, so a receipt or bounce names it.

The result parses back with Python's `email` parser to the same headers and parts
(tests/test_rendering.py checks that) and is about 20x faster to build (bench figure in
campaign_lib.rendering.measure).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

from campaign_lib.rendering.messages import one_line

BOUNDARY = "=_kms_alternative_b7c1"
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
# What the connector accepts as an address: no spaces, quotes, brackets or control characters.
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"\\\x00-\x1f\x7f]{1,64}@[^\s@<>()\[\],;:\"\\\x00-\x1f\x7f]{1,253}$")
_MESSAGE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SPECIALS = re.compile(r"[()<>\[\]:;@\\,.\"]")
_ENCODED_WORD_BYTES = 45  # base64 of 45 bytes is 60 characters: with =?utf-8?b?...?= under 76
_OWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


def is_valid_address(address: str) -> bool:
    """True for an address the connector sends to (one plain addr-spec, no display name)."""
    return bool(_ADDRESS.match(address))


def encode_header(name: str, value: str) -> bytes:
    """`Name: value` CRLF, the value on one logical line, RFC 2047-encoded when not plain ASCII."""
    value = one_line(value)
    if value.isascii() and "=?" not in value and len(name) + len(value) < 996:
        return f"{name}: {value}\r\n".encode("ascii")
    return f"{name}: {_encoded_words(value)}\r\n".encode("ascii")


def _encoded_words(value: str) -> str:
    data = value.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + _ENCODED_WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # never split a character
            end -= 1
        words.append(data[start:end])
        start = end
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word).decode('ascii')}?=" for word in words or [b""])


def mailbox(display_name: str, address: str) -> str:
    """A From value: `"Name" <address>`, the name encoded when it is not plain ASCII."""
    name = one_line(display_name)
    if not name:
        return address
    if not name.isascii() or "=?" in name:
        return f"{_encoded_words(name)} <{address}>"
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable of `text` with CRLF line ends (lone CR and LF count as line ends)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    return binascii.b2a_qp(lines.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class MimeBuilder:
    """Builds the MIME bytes of a campaign's emails from one sender (`from_address`,
    `from_name`); `domain` names the Message-IDs (default: the sender's domain)."""

    from_address: str
    from_name: str = ""
    domain: str = ""

    def __post_init__(self) -> None:
        if not (is_valid_address(self.from_address) and self.from_address.isascii()):
            raise ValueError(f"not a usable sender address: {self.from_address!r}")
        object.__setattr__(self, "domain", self.domain or self.from_address.rpartition("@")[2])
        from_line = f"From: {mailbox(self.from_name, self.from_address)}\r\n"
        object.__setattr__(self, "_from", from_line.encode("ascii"))

    def message_id(self, message_key: str) -> str:
        """The deterministic Message-ID of a message, angle brackets included."""
        if not _MESSAGE_KEY.match(message_key):
            raise ValueError(f"a message key is letters, digits, '-' and '_', not {message_key!r}")
        return f"<{message_key}@{self.domain}>"

    def build(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        message_key: str,
        headers: Mapping[str, str] | None = None,
        date: str | None = None,
    ) -> bytes:
        """The whole message (headers and body, CRLF line ends) for one recipient.

        `headers` adds e.g. List-Unsubscribe; names must be RFC 5322 field names and may not
        replace the ones built here (ValueError), `to` must be one plain address (ValueError;
        a non-ASCII one goes into the header as UTF-8, for servers with SMTPUTF8). `date`
        defaults to now."""
        if not is_valid_address(to):
            raise ValueError(f"not a plain email address: {to!r}")
        head = [
            self._from,
            f"To: {to}\r\n".encode(),
            encode_header("Subject", subject),
            encode_header("Date", date or _now()),
            encode_header("Message-ID", self.message_id(message_key)),
            b"MIME-Version: 1.0\r\n",
        ]
        for name, value in (headers or {}).items():
            if not _HEADER_NAME.match(name) or name.lower() in _OWN_HEADERS:
                raise ValueError(f"header name {name!r} cannot be set by a template or caller")
            head.append(encode_header(name, value))
        plain = quoted_printable(text)
        if html is None:
            head.append(_PLAIN_HEADERS)
            return b"".join(head) + b"\r\n" + plain
        return b"".join(
            (
                *head,
                _ALTERNATIVE_HEAD,
                plain,
                _HTML_PART_HEAD,
                quoted_printable(html),
                _ALTERNATIVE_END,
            )
        )


_PLAIN_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
)
_ALTERNATIVE_HEAD = (
    f'Content-Type: multipart/alternative; boundary="{BOUNDARY}"\r\n\r\n--{BOUNDARY}\r\n'.encode("ascii")
    + _PLAIN_HEADERS
    + b"\r\n"
)
# Each part ends with its own CRLF before the delimiter's, which belongs to the boundary (RFC 2046).
_HTML_PART_HEAD = (
    f"\r\n--{BOUNDARY}\r\n".encode("ascii")
    + b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)
_ALTERNATIVE_END = f"\r\n--{BOUNDARY}--\r\n".encode("ascii")


def _now() -> str:
    return _date_of(int(time.time()))


@functools.lru_cache(maxsize=2)
def _date_of(second: int) -> str:
    """RFC 5322 date of a second (formatted once per second, not once per message)."""
    return formatdate(second, localtime=False, usegmt=True)
