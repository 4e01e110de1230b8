"""Telling scanners, bots and prefetches from people on the tracking endpoints.

Mail servers' link scanners (Microsoft Safe Links, Proofpoint, Mimecast, Barracuda ...),
link previews of chat apps and Apple Mail Privacy Protection fetch pixels and follow links
that no person saw. Their hits are kept as events with `is_bot` and a reason, and reports
leave them out. What a single request shows is judged here; what needs the message's history
(a hit within seconds of the send, clicks on several links within a second) is judged in SQL
(sql/tracking.sql), where that history is.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from campaign_lib.tracking.settings import IpNetwork

# Names that only scanners, crawlers, previews and HTTP libraries put in their user agent.
_SCANNER_AGENT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scanner|preview|proofpoint|mimecast|barracuda|safelinks|"
    r"urldefense|messagelabs|symantec|fireeye|forcepoint|trendmicro|sophos|ironport|"
    r"python-requests|python-urllib|python-httpx|aiohttp|curl/|wget/|go-http-client|java/|"
    r"okhttp|libwww|headlesschrome|phantomjs|facebookexternalhit|whatsapp|skypeuripreview",
    re.IGNORECASE,
)
# Apple's Mail Privacy Protection proxy presents exactly this, with no platform details.
_BARE_MOZILLA = "Mozilla/5.0"


def request_bot_reason(
    method: str,
    user_agent: str | None,
    client_ip: str | None,
    purpose: str,
    bot_networks: Sequence[IpNetwork],
) -> str | None:
    """Why a single tracking request is not a person ('head_request', 'no_user_agent',
    'scanner_agent', 'privacy_proxy'), or None when nothing in it says so."""
    if method == "HEAD":
        return "head_request"
    agent = (user_agent or "").strip()
    if not agent:
        return "no_user_agent"
    if _SCANNER_AGENT.search(agent):
        return "scanner_agent"
    if purpose == "open" and (agent == _BARE_MOZILLA or _in_networks(client_ip, bot_networks)):
        return "privacy_proxy"
    return None


def _in_networks(client_ip: str | None, networks: Sequence[IpNetwork]) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)
