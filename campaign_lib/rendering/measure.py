"""How fast MIME messages are built: the MimeBuilder fast path next to the `email` package.

`compare_mime_builders()` builds the demo campaign's email for `count` recipients both ways and
returns messages per second for each and their ratio; bench/delivery.py prints it, and
tests/test_rendering.py prints it into the test log. The baseline is what one would write
with the standard library: an EmailMessage per recipient with a text part, an HTML alternative
and the same headers, serialised with as_bytes().
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from campaign_lib.rendering.messages import Rendered
from campaign_lib.rendering.mime import MimeBuilder


@dataclass(frozen=True)
class BuildRates:
    """Messages built per second by the fast path and by the email package, and their ratio."""

    messages: int
    fast_per_second: float
    email_package_per_second: float

    @property
    def ratio(self) -> float:
        return self.fast_per_second / self.email_package_per_second

    def as_text(self) -> str:
        return (
            f"MIME build, {self.messages} messages: MimeBuilder {self.fast_per_second:,.0f}/s, "
            f"email.message.EmailMessage {self.email_package_per_second:,.0f}/s, ratio {self.ratio:.1f}x"
        )


def email_package_message(builder: MimeBuilder, to: str, rendered: Rendered, message_key: str) -> bytes:
    """The same message built with the standard library's EmailMessage (the baseline)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = f"{builder.from_name} <{builder.from_address}>"
    message["To"] = to
    message["Subject"] = rendered.subject or ""
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = builder.message_id(message_key)
    for name, value in rendered.headers.items():
        message[name] = value
    message.set_content(rendered.text)
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html")
    return message.as_bytes()


def compare_mime_builders(
    builder: MimeBuilder, recipients: list[tuple[str, str, Rendered]], repeat: int = 1
) -> BuildRates:
    """Build every (address, message_key, rendered) of `recipients` both ways; the rates."""
    started = time.perf_counter()
    for _ in range(repeat):
        for address, key, rendered in recipients:
            builder.build(
                to=address,
                subject=rendered.subject or "",
                text=rendered.text,
                html=rendered.html,
                message_key=key,
                headers=rendered.headers,
            )
    fast = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(repeat):
        for address, key, rendered in recipients:
            email_package_message(builder, address, rendered, key)
    slow = time.perf_counter() - started
    count = len(recipients) * repeat
    return BuildRates(count, count / fast, count / slow)
