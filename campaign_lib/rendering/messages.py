"""A campaign's message templates, checked once, rendered per recipient.

    templates = load_campaign_templates(campaign)                 # TemplateError if any is bad
    rendered = templates.render("email", recipient, links, message_key)
    rendered.subject, rendered.text, rendered.html, rendered.headers

Personal data reaches a template only as variables (never pasted into template source), so a
name such as `{{ 7*7 }}` prints literally, `<script>` is escaped in HTML, and a line break in a
name never reaches a header: the subject is folded to one line here and every header again
when the MIME message is built (campaign_lib.rendering.mime).

For email the renderer also does what every campaign needs and nobody should write by hand:
each http(s) link of the HTML part (and the same URLs in the text part) goes through a signed
click URL of campaign_lib.tracking, an open pixel is added before `</body>`, and the headers
List-Unsubscribe and List-Unsubscribe-Post (RFC 8058 one-click) name the unsubscribe URL. SMS
and push texts are rendered as written: tracked links would cost SMS segments.

The variables a template may use are listed in VARIABLES (and documented in docs/templates.md).
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from campaign_lib.campaign.definition import Campaign, shown_path, templates_folder
from campaign_lib.rendering.sandbox import (
    Missing,
    TemplateError,
    Variables,
    check_template,
    make_environment,
    render_checked,
)
from campaign_lib.tracking.tokens import TrackingLinks

RECIPIENT_FIELDS = ("first_name", "last_name", "salutation", "email", "phone", "preferred_language", "cell")
OFFER_FIELDS = frozenset({"name", "sku", "code", "valid_until"})
# Jinja's own loop variable inside {% for %}: its counters, not its methods.
LOOP_FIELDS = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length"})
CAMPAIGN_VARIABLES = ("campaign_name", "sender_name", "website_url", "sms_reply_number")
VARIABLES = Variables(
    names=frozenset({*RECIPIENT_FIELDS, *CAMPAIGN_VARIABLES, "offer", "unsubscribe_url"}),
    fields={"offer": OFFER_FIELDS, "loop": LOOP_FIELDS},
)
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"
DEFAULT_SENDER_NAME = "Erlebnisresort"
DEFAULT_WEBSITE_URL = "https://www.resort-example.de"
DEFAULT_SMS_REPLY_NUMBER = "+4989215566"

_MISSING = {name: Missing(name=name) for name in (*RECIPIENT_FIELDS, "offer")}
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"']+")
_TRAILING_PUNCTUATION = ".,;:!?)]}'\""
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Rendered:
    """One message for one recipient; html and subject are None for SMS and push."""

    subject: str | None
    text: str
    html: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageSettings:
    """Installation-wide values templates can use, from the environment:
    KMS_SENDER_NAME, KMS_WEBSITE_URL, KMS_SMS_REPLY_NUMBER."""

    sender_name: str = DEFAULT_SENDER_NAME
    website_url: str = DEFAULT_WEBSITE_URL
    sms_reply_number: str = DEFAULT_SMS_REPLY_NUMBER

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MessageSettings:
        env = os.environ if environ is None else environ
        return cls(
            sender_name=env.get("KMS_SENDER_NAME") or DEFAULT_SENDER_NAME,
            website_url=(env.get("KMS_WEBSITE_URL") or DEFAULT_WEBSITE_URL).rstrip("/"),
            sms_reply_number=env.get("KMS_SMS_REPLY_NUMBER") or DEFAULT_SMS_REPLY_NUMBER,
        )


@dataclass(frozen=True)
class _ChannelTemplates:
    text: object
    text_shown: str
    subject: object | None = None
    subject_shown: str = ""
    html: object | None = None
    html_shown: str = ""


def one_line(value: str) -> str:
    """`value` with every line break and control character turned into one space: what a
    header (subject, display name) may hold."""
    return _SPACES.sub(" ", _NOT_ONE_LINE.sub(" ", value)).strip()


def voucher_code(message_key: str) -> str:
    """The personal offer code of a message: 8 characters from its key, e.g. 7KQ2-M4XA.
    Deterministic, so a re-render (a retried task, a preview) shows the same code."""
    digest = hashlib.sha256(b"kms-offer-code\x00" + message_key.encode("ascii")).digest()
    code = base64.b32encode(digest).decode("ascii")[:8]
    return f"{code[:4]}-{code[4:]}"


class CampaignTemplates:
    """The checked, compiled templates of one campaign (see load_campaign_templates)."""

    def __init__(
        self,
        campaign: Campaign,
        channels: dict[str, _ChannelTemplates],
        valid_until: date,
        settings: MessageSettings,
    ) -> None:
        self.campaign = campaign
        self._channels = channels
        self._valid_until = valid_until.strftime("%d.%m.%Y")
        self._context: dict[str, object] = {
            "campaign_name": campaign.name,
            "sender_name": settings.sender_name,
            "website_url": settings.website_url,
            "sms_reply_number": settings.sms_reply_number,
        }

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def render(
        self, channel: str, recipient: Mapping[str, object], links: TrackingLinks, message_key: str
    ) -> Rendered:
        """The message of `channel` for one recipient (keys of RECIPIENT_FIELDS; missing or
        None values render as nothing). TemplateError if the channel has no templates or a
        template fails at render time."""
        templates = self._templates(channel)
        unsubscribe = links.unsubscribe_url(message_key)
        context = self._recipient_context(recipient, unsubscribe, message_key)
        text = render_checked(templates.text, context, templates.text_shown)
        if templates.html is None:
            return Rendered(subject=None, text=text.strip(), html=None, headers={})
        subject = one_line(render_checked(templates.subject, context, templates.subject_shown))
        html, clicks = _track_links(
            render_checked(templates.html, context, templates.html_shown), links, message_key, unsubscribe
        )
        html = _add_open_pixel(html, links.open_url(message_key))
        text = _track_text_links(text, clicks)
        headers = {"List-Unsubscribe": f"<{unsubscribe}>", "List-Unsubscribe-Post": LIST_UNSUBSCRIBE_POST}
        return Rendered(subject=subject, text=text, html=html, headers=headers)

    def link_targets(self, channel: str) -> tuple[str, ...]:
        """The http(s) URLs that render() turns into click URLs for `channel`, in template order,
        as rendered for a recipient without personal data (() for SMS and push)."""
        templates = self._templates(channel)
        if templates.html is None:
            return ()
        html = render_checked(
            templates.html, self._recipient_context({}, "", "preview"), templates.html_shown
        )
        targets = (_href_target(match) for match in _HREF.finditer(html))
        return tuple(dict.fromkeys(t for t in targets if t.startswith(("http://", "https://"))))

    def _templates(self, channel: str) -> _ChannelTemplates:
        templates = self._channels.get(channel)
        if templates is None:
            raise TemplateError(f"campaign {self.campaign.name} has no templates for channel {channel!r}")
        return templates

    def _recipient_context(
        self, recipient: Mapping[str, object], unsubscribe: str, message_key: str
    ) -> dict[str, object]:
        context = dict(self._context)
        for name in RECIPIENT_FIELDS:
            value = recipient.get(name)
            context[name] = _MISSING[name] if value is None or value == "" else str(value)
        context["unsubscribe_url"] = unsubscribe
        context["offer"] = self._offer(message_key)
        return context

    def _offer(self, message_key: str) -> Mapping[str, str] | Missing:
        offer = self.campaign.offer
        if offer is None:
            return _MISSING["offer"]
        return {
            "name": offer.name,
            "sku": offer.sku,
            "code": voucher_code(message_key),
            "valid_until": self._valid_until,
        }


def load_campaign_templates(
    campaign: Campaign,
    *,
    run_date: date | None = None,
    templates_dir: Path | None = None,
    settings: MessageSettings | None = None,
) -> CampaignTemplates:
    """Read, check and compile every template of `campaign` (see campaign_lib.rendering.sandbox).

    `run_date` (default today, UTC) plus the campaign's response window gives offer.valid_until.
    Raises TemplateError `<file>:<line>: <problem>` for the first bad template."""
    folder = templates_dir or templates_folder()
    html_env = make_environment(html=True)
    text_env = make_environment(html=False)
    variables = VARIABLES
    if campaign.offer is None:
        variables = VARIABLES.without("offer", f"campaign {campaign.name} defines no offer")
    channels: dict[str, _ChannelTemplates] = {}
    email = campaign.templates.email
    if email is not None:
        subject_shown = f"campaign {campaign.name}: templates.email.subject"
        html_path, text_path = folder / email.html, folder / email.text
        channels["email"] = _ChannelTemplates(
            subject=check_template(text_env, email.subject, subject_shown, variables),
            subject_shown=subject_shown,
            html=check_template(html_env, _read(html_path), shown_path(html_path), variables),
            html_shown=shown_path(html_path),
            text=check_template(text_env, _read(text_path), shown_path(text_path), variables),
            text_shown=shown_path(text_path),
        )
    for channel in ("sms", "push"):
        template = getattr(campaign.templates, channel)
        if template is not None:
            path = folder / template.text
            channels[channel] = _ChannelTemplates(
                text=check_template(text_env, _read(path), shown_path(path), variables),
                text_shown=shown_path(path),
            )
    start = run_date or datetime.now(UTC).date()
    return CampaignTemplates(
        campaign,
        channels,
        start + timedelta(days=campaign.response_window_days),
        settings or MessageSettings.from_env(),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{shown_path(path)}: no such template file") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{shown_path(path)}: not UTF-8 text (byte {exc.start})") from None


def _track_links(
    html: str, links: TrackingLinks, message_key: str, unsubscribe: str
) -> tuple[str, dict[str, str]]:
    """`html` with each http(s) <a href> turned into a click URL; returns it and {target: click URL}."""
    clicks: dict[str, str] = {}

    def tracked(match: re.Match[str]) -> str:
        target = _href_target(match)
        if target == unsubscribe or not target.startswith(("http://", "https://")):
            return match.group(0)
        click = clicks.get(target)
        if click is None:
            try:
                click = links.click_url(message_key, target)
            except ValueError:
                return match.group(0)
            clicks[target] = click
        return f'{match.group(1)}"{html_lib.escape(click)}"'

    return _HREF.sub(tracked, html), clicks


def _href_target(match: re.Match[str]) -> str:
    raw = match.group(2) if match.group(2) is not None else match.group(3)
    return html_lib.unescape(raw).strip()


def _track_text_links(text: str, clicks: Mapping[str, str]) -> str:
    """The text part with the URLs that are links of the HTML part replaced by their click URLs.

    Only those: a URL that only personal data brought into the text stays as it is, so no
    one can get a signed redirect to a site of their choosing by putting it in their name."""
    if not clicks:
        return text

    def tracked(match: re.Match[str]) -> str:
        url = match.group(0)
        core = url.rstrip(_TRAILING_PUNCTUATION)
        click = clicks.get(core)
        return click + url[len(core) :] if click else url

    return _TEXT_URL.sub(tracked, text)


def _add_open_pixel(html: str, open_url: str) -> str:
    pixel = (
        f'<img src="{html_lib.escape(open_url)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;">'
    )
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]
