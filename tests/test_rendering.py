"""Rendering: template checks at load (syntax, unknown variables, sandbox escapes), hostile
personal data, tracked links, MIME bytes that Python's email parser reads back equal, the
fast MIME path's speed, and the `kms template` commands."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from campaign_lib.campaign.definition import Campaign, find_campaign, load_campaigns
from campaign_lib.cli import main
from campaign_lib.rendering import (
    VARIABLES,
    MimeBuilder,
    TemplateError,
    load_campaign_templates,
    voucher_code,
)
from campaign_lib.rendering.measure import compare_mime_builders
from campaign_lib.rendering.sandbox import check_template, make_environment, render_checked
from campaign_lib.tracking.tokens import TrackingLinks

LINKS = TrackingLinks("http://127.0.0.1:8790/kms", b"s" * 32)
KEY = "0123456789abcdef0123456789abcdef"
DEMO = "water_park_for_hotel_guests"
ERIKA = {"salutation": "Frau", "first_name": "Erika", "last_name": "Mustermann", "email": "erika@example.org"}


def demo_templates():
    return load_campaign_templates(find_campaign(DEMO).campaign, run_date=date(2026, 6, 1))


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def lf(value: str) -> str:
    return value.replace("\r\n", "\n")


def test_every_campaigns_templates_pass_the_checks():
    valid, invalid = load_campaigns()
    assert not invalid
    for loaded in valid.values():
        templates = load_campaign_templates(loaded.campaign)
        assert set(templates.channels) == set(loaded.campaign.channels)
        for channel in templates.channels:
            rendered = templates.render(channel, ERIKA, LINKS, KEY)
            if channel == "email":
                assert "Erika" in rendered.subject
                assert (
                    LINKS.unsubscribe_url(KEY) in rendered.html
                    and LINKS.unsubscribe_url(KEY) in rendered.text
                )
            elif channel == "sms":
                assert "STOP" in rendered.text and len(rendered.text) <= 320  # at most 2 UCS-2 segments x 160
            else:
                assert len(rendered.text) <= 178  # what a push notification shows
            assert voucher_code(KEY) in rendered.text


@pytest.mark.parametrize(
    ("source", "line", "problem"),
    [
        ("{{ ''.__class__.__mro__ }}", 1, "attribute '__"),
        ("Hallo\n{{ cycler.__init__.__globals__ }}", 2, "not allowed"),
        ("{{ first_name['__class__'] }}", 1, "attribute '__class__' is not allowed"),
        ("{% set x = first_name %}\n\n{{ x.__class__ }}", 3, "attribute '__class__' is not allowed"),
        ("{{ '{0.__class__}'.format(first_name) }}", 1, "attribute 'format' is not allowed"),
        ("{{ first_name() }}", 1, "only macros of the template itself can be called"),
        ("{{ first_name.upper }}", 1, "attribute 'upper' is not allowed"),
        ("{{ first_name | attr('__class__') }}", 1, "filter 'attr' is not allowed"),
        ("{{ first_name | safe }}", 1, "|safe is not allowed"),
        ("{% autoescape false %}{{ first_name }}{% endautoescape %}", 1, "{% autoescape %} is not allowed"),
        ("{% include 'other.j2' %}", 1, "{% include %} is not allowed"),
        ("{% extends 'base.j2' %}", 1, "{% extends %} is not allowed"),
        ("{% import 'macros.j2' as m %}", 1, "{% import %} is not allowed"),
        ("{{ range(10) | length }}", 1, "unknown variable 'range'"),
        ("{{ lipsum() }}", 1, "unknown variable 'lipsum'"),
        ("line one\nline two\n{{ customer_number }}", 3, "unknown variable 'customer_number'"),
        ("{{ offer.url }}", 1, "unknown field offer.url"),
        ("Hallo {{ first_name }\n", 1, "syntax error"),
        ("{% for x in offer %}\n{% endif %}", 2, "syntax error"),
        ("{{ first_name | no_such_filter }}", 1, "filter 'no_such_filter' is not allowed"),
        ("{{ first_name | center(100000000) }}", 1, "filter 'center' is not allowed"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None,
)
def test_hostile_or_broken_template_is_refused_with_file_and_line(source, line, problem):
    with pytest.raises(TemplateError) as refused:
        check_template(make_environment(html=True), source, "messages/x/email.html.j2", VARIABLES)
    message = str(refused.value)
    assert message.startswith(f"messages/x/email.html.j2:{line}: "), message
    assert problem in message


def test_ordinary_template_constructs_pass():
    source = (
        "{% macro greeting(name) %}Hallo {{ name | default('Gast') | title }}{% endmacro %}"
        "{{ greeting(first_name) }}: {% for word in ['a', 'b'] %}{{ loop.index }}{{ word }}"
        "{% if not loop.last %},{% endif %}{% endfor %} {{ offer['name'] }} {{ first_name[0] }}"
    )
    template = check_template(make_environment(html=True), source, "t", VARIABLES)
    assert (
        template.render(first_name="anna", offer={"name": "Tageskarte"}) == "Hallo Anna: 1a,2b Tageskarte a"
    )
    with pytest.raises(TemplateError, match=r"unknown field loop\.cycle"):
        check_template(
            make_environment(html=True), "{% for x in 'ab' %}{{ loop.cycle }}{% endfor %}", "t", VARIABLES
        )


@pytest.mark.parametrize(
    "source",
    ["{{ 'x' * 10000000 }}", "{{ 10 ** 100000 }}", "{{ ((2 ** 60) ** 60) ** 60 }}"],
    ids=["long string", "huge power", "power of powers"],
)
def test_sandbox_bounds_what_a_template_builds(source):
    template = check_template(make_environment(html=False), source, "sms.txt.j2", VARIABLES)
    with pytest.raises(TemplateError, match=r"sms.txt.j2: cannot render: .*too"):
        render_checked(template, {}, "sms.txt.j2")


def campaign_with_html(folder: Path, html: str) -> Campaign:
    """A campaign without an offer whose email HTML is `html` (files written below `folder`)."""
    messages = folder / "messages" / "evil"
    messages.mkdir(parents=True)
    (messages / "email.html.j2").write_text(html)
    (messages / "email.txt.j2").write_text("Hallo\n")
    return Campaign.model_validate(
        {
            "name": "evil",
            "description": "x",
            "owner": "x",
            "selection": {"name": "anything"},
            "purpose": "newsletter",
            "channels": ["email"],
            "templates": {
                "email": {
                    "subject": "Hi",
                    "html": "messages/evil/email.html.j2",
                    "text": "messages/evil/email.txt.j2",
                }
            },
        }
    )


@pytest.mark.parametrize(
    ("html", "problem"),
    [
        (
            "<p>Hallo</p>\n<p>{{ cycler.__init__.__globals__.os }}</p>\n",
            r":2: attribute '__\w+__' is not allowed",
        ),
        (
            "<p>Hallo</p>\n\n<p>{{ offer.name }}</p>\n",
            r":3: 'offer' cannot be used: campaign evil defines no offer",
        ),
    ],
    ids=["sandbox escape", "offer without an offer"],
)
def test_campaign_with_a_bad_template_file_fails_at_load_naming_the_file(tmp_path: Path, html, problem):
    campaign = campaign_with_html(tmp_path, html)
    with pytest.raises(TemplateError, match="/messages/evil/email.html.j2" + problem):
        load_campaign_templates(campaign, templates_dir=tmp_path)


def test_demo_email_has_tracked_links_pixel_and_unsubscribe_headers():
    rendered = demo_templates().render("email", ERIKA, LINKS, KEY)
    assert rendered.subject == "Erika, Ihre Tageskarte für die Wasserwelt wartet"
    hrefs = re.findall(r'<a\b[^>]*href="([^"]+)"', rendered.html)
    unsubscribe = LINKS.unsubscribe_url(KEY)
    targets = []
    for href in hrefs:
        if href == unsubscribe:
            continue
        token = href.rpartition("/t/c/")[2]
        claims = LINKS.verify("click", token)
        assert claims is not None and claims.message_key == KEY
        targets.append(claims.url)
    assert targets == [
        "https://www.resort-example.de/wasserpark/tickets",
        "https://www.resort-example.de/kontakt",
    ]
    assert unsubscribe in hrefs
    assert rendered.html.index(LINKS.open_url(KEY)) < rendered.html.rindex("</body>")
    # The text part carries the same click URLs, and the plain unsubscribe URL.
    assert "https://www.resort-example.de/" not in rendered.text
    assert LINKS.click_url(KEY, targets[0]) in rendered.text
    assert unsubscribe in rendered.text
    assert rendered.headers == {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert "Liebe Frau Mustermann," in rendered.text
    assert voucher_code(KEY) in rendered.html and "Gültig bis 01.07.2026" in rendered.text
    assert demo_templates().link_targets("email") == tuple(targets)


@pytest.mark.parametrize("channel", ["sms", "push"])
def test_sms_and_push_are_plain_text_without_tracking(channel):
    rendered = demo_templates().render(channel, ERIKA, LINKS, KEY)
    assert rendered.subject is None and rendered.html is None and rendered.headers == {}
    assert rendered.text.startswith("Erika, ") and voucher_code(KEY) in rendered.text
    assert "\n" not in rendered.text and "/t/c/" not in rendered.text
    assert demo_templates().link_targets(channel) == ()


def test_missing_personal_data_renders_the_fallbacks():
    environment = make_environment(html=False)
    template = check_template(
        environment,
        "{{ first_name[0] }}|{{ last_name | upper }}|{{ salutation | default('Hallo') }}",
        "t",
        VARIABLES,
    )
    context = demo_templates()._recipient_context({}, "", KEY)
    assert template.render(context) == "||Hallo"
    rendered = demo_templates().render("email", {"first_name": None, "email": "x@example.org"}, LINKS, KEY)
    assert rendered.subject == "Ihre Tageskarte für die Wasserwelt wartet"
    assert rendered.text.startswith("Liebe Gäste,")
    assert demo_templates().render("sms", {}, LINKS, KEY).text.startswith("Hallo, ")


HOSTILE = {
    "salutation": None,
    "first_name": "<script>alert('x')</script> {{ 7*7 }}{% for x in offer %}x{% endfor %}\r\nBcc: victim@example.org",
    "last_name": "Mallory",
    "email": "mallory@example.org",
}


def test_hostile_personal_data_is_escaped_literal_and_one_line():
    rendered = demo_templates().render("email", HOSTILE, LINKS, KEY)
    assert (
        "<script>" not in rendered.html
        and "Hallo &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; {{ 7*7 }}" in rendered.html
    )
    assert "Hallo <script>alert('x')</script> {{ 7*7 }}{% for x in offer %}x{% endfor %}" in rendered.text
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    data = MimeBuilder("news@resort-example.de", "Resort").build(
        to="mallory@example.org",
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_key=KEY,
        headers=rendered.headers,
    )
    message = parse(data)
    assert message["Bcc"] is None
    assert message["Subject"] == (
        "<script>alert('x')</script> {{ 7*7 }}{% for x in offer %}x{% endfor %} Bcc: victim@example.org, "
        "Ihre Tageskarte für die Wasserwelt wartet"
    )
    header_block = data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^Bcc:", header_block, re.MULTILINE | re.IGNORECASE)


def test_url_in_personal_data_is_not_turned_into_a_signed_redirect():
    recipient = dict(ERIKA, first_name="https://evil.example/phish")
    rendered = demo_templates().render("email", recipient, LINKS, KEY)
    assert "Hallo" not in rendered.text  # Frau + last name wins the greeting; the subject has it
    sms = demo_templates().render("sms", recipient, LINKS, KEY)
    assert sms.text.startswith("https://evil.example/phish, ")
    rendered = demo_templates().render("email", dict(recipient, salutation=None), LINKS, KEY)
    assert "Hallo https://evil.example/phish," in rendered.text
    assert LINKS.click_url(KEY, "https://evil.example/phish") not in rendered.text


@pytest.mark.parametrize(
    ("subject", "extra"),
    [
        ("Plain ASCII subject", {}),
        ("Grüße aus der Wasserwelt 🌊 \u2013 für Sie", {}),
        ("=?utf-8?b?SGFja2Vk?= looks encoded", {}),
        ("Ü" * 50 + " 🌊" * 20 + " Grüße", {}),
        ("A long subject " * 12, {"X-Campaign": "Sommer \u2013 Wasserwelt"}),
    ],
    ids=["ascii", "utf-8 and emoji", "encoded-word lookalike", "long utf-8", "long with extra header"],
)
def test_mime_bytes_parse_back_equal(subject, extra):
    rendered = demo_templates().render("email", ERIKA, LINKS, KEY)
    builder = MimeBuilder("newsletter@resort-example.de", "Erlebnisresort Süd")
    headers = dict(rendered.headers) | extra
    data = builder.build(
        to="erika@example.org",
        subject=subject,
        text=rendered.text,
        html=rendered.html,
        message_key=KEY,
        headers=headers,
    )
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")
    message = parse(data)
    assert message["Subject"] == subject.strip()
    assert message["From"] == "Erlebnisresort Süd <newsletter@resort-example.de>"
    assert message["To"] == "erika@example.org"
    assert message["Message-ID"] == f"<{KEY}@resort-example.de>"
    for name, value in headers.items():
        assert message[name] == value
    assert message.get_content_type() == "multipart/alternative"
    assert lf(message.get_body(("plain",)).get_content()) == rendered.text
    assert lf(message.get_body(("html",)).get_content()) == rendered.html
    assert not message.defects and all(not part.defects for part in message.walk())


def test_text_only_message_and_refused_headers():
    builder = MimeBuilder("newsletter@resort-example.de")
    message = parse(
        builder.build(to="a@example.org", subject="s", text="nur Text\n", html=None, message_key="k1")
    )
    assert message.get_content_type() == "text/plain" and lf(message.get_content()) == "nur Text\n"
    with pytest.raises(ValueError, match="not a plain email address"):
        builder.build(
            to="a@example.org\r\nBcc: b@example.org", subject="s", text="t", html=None, message_key="k"
        )
    with pytest.raises(ValueError, match="message key"):
        builder.build(to="a@example.org", subject="s", text="t", html=None, message_key="k>\r\nBcc: x")
    for name in ("Bcc\r\nX", "From", "content-type", "Bad Name"):
        with pytest.raises(ValueError, match="cannot be set"):
            builder.build(
                to="a@example.org", subject="s", text="t", html=None, message_key="k", headers={name: "v"}
            )


def test_fast_mime_path_against_the_email_package(capsys):
    templates = demo_templates()
    recipients = [
        (f"guest{n}@example.org", f"{n:032x}", templates.render("email", ERIKA, LINKS, f"{n:032x}"))
        for n in range(300)
    ]
    rates = compare_mime_builders(MimeBuilder("newsletter@resort-example.de", "Erlebnisresort"), recipients)
    with capsys.disabled():
        print(f"\n{rates.as_text()} (under load)")
    assert rates.ratio > 5


@pytest.fixture
def contact_id(clean_db) -> int:
    with clean_db.begin() as conn:
        account = conn.execute(
            text("insert into core.account (account_type) values ('household') returning account_id")
        ).scalar_one()
        return conn.execute(
            text(
                "insert into core.contact (account_id, salutation, first_name, last_name, email, preferred_language) "
                "values (:account, 'Herr', 'Jörg', 'Öztürk <b>', 'joerg@example.org', 'de') returning contact_id"
            ),
            {"account": account},
        ).scalar_one()


def test_cli_template_check_and_preview_for_a_contact(contact_id, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KMS_TRACKING_SECRET", "t" * 40)
    assert main(["template", "check"]) == 0
    assert f"{DEMO}: templates valid (email, sms, push)" in capsys.readouterr().out
    html_file = tmp_path / "preview.html"
    assert main(["template", "preview", DEMO, "--contact", str(contact_id), "--html", str(html_file)]) == 0
    out = capsys.readouterr().out
    assert "Subject: Jörg, Ihre Tageskarte für die Wasserwelt wartet" in out
    assert "Lieber Herr Öztürk <b>," in out
    assert "== sms\nJörg, Ihr Geschenk" in out
    assert "Lieber Herr Öztürk &lt;b&gt;," in html_file.read_text()
    assert main(["template", "preview", DEMO, "--contact", "999999", "--channel", "sms"]) == 1
    assert "no contact 999999" in capsys.readouterr().err


def test_cli_campaign_validate_checks_the_templates(tmp_path, capsys):
    source = find_campaign(DEMO).path.read_text(encoding="utf-8")
    broken = tmp_path / f"{DEMO}.yaml"
    broken.write_text(
        source.replace("Tageskarte für die Wasserwelt wartet", "{{ customer_number }}"), encoding="utf-8"
    )
    assert main(["campaign", "validate", str(broken)]) == 1
    assert "templates.email.subject:1: unknown variable 'customer_number'" in capsys.readouterr().err
