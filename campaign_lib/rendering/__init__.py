"""Rendering of campaign messages: checked Jinja2 templates in a sandbox, tracked links, and the
MIME bytes of emails (see messages, sandbox and mime)."""

from campaign_lib.rendering.messages import (
    RECIPIENT_FIELDS,
    VARIABLES,
    CampaignTemplates,
    MessageSettings,
    Rendered,
    load_campaign_templates,
    one_line,
    voucher_code,
)
from campaign_lib.rendering.mime import MimeBuilder, is_valid_address
from campaign_lib.rendering.sandbox import TemplateError

__all__ = [
    "RECIPIENT_FIELDS",
    "VARIABLES",
    "CampaignTemplates",
    "MessageSettings",
    "MimeBuilder",
    "Rendered",
    "TemplateError",
    "is_valid_address",
    "load_campaign_templates",
    "one_line",
    "voucher_code",
]
