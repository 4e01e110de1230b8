"""A synthetic campaign run with a known truth, for the reporting tests and the benchmark.

`build_synthetic_run` writes, set-based (sql/reporting_synthetic.sql), `people` new
contacts, a frozen campaign run over them with a control group, one message per treated
member (sent, failed or skipped), tracking events, contact history, and purchases of the
offered product at a planted rate: `base_rate` for the control group and `base_rate +
uplift` for everyone treated (intention to treat). The end-to-end simulation of the demo,
which goes through the real tracking URLs and SFTP files, is the generator's
(campaign_lib.generator); this one only needs the database and scales to millions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from campaign_lib.sqlfiles import queries

SYNTHETIC_SKU = "SYN-OFFER"


@dataclass(frozen=True)
class Truth:
    """What a synthetic run was built with."""

    base_rate: float
    uplift: float
    price_cents: int
    mean_quantity: float = 2.0

    @property
    def revenue_uplift_per_person(self) -> float:
        """The planted difference of expected revenue per person, in currency units."""
        return self.uplift * self.mean_quantity * self.price_cents / 100


def definition(window_days: int, channels: tuple[str, ...] = ("email", "sms", "push")) -> dict:
    """The stored definition of a synthetic campaign: prices, fixed cost, window and offer."""
    prices = {"email": "0.002", "sms": "0.075", "push": "0.001"}
    return {
        "name": "synthetic",
        "channels": list(channels),
        "costs": {"currency": "EUR", "per_message": {c: prices[c] for c in channels}, "fixed": "350"},
        "response_window_days": window_days,
        "offer": {"sku": SYNTHETIC_SKU, "name": "a synthetic offer"},
    }


def build_synthetic_run(
    engine: Engine,
    *,
    campaign_name: str,
    people: int,
    truth: Truth,
    seed: int,
    control_share: float = 0.1,
    window_days: int = 30,
    sent_at: datetime | None = None,
    earlier_share: float = 0.0,
    background_per_person: int = 0,
) -> int:
    """Build a synthetic run (see the module doc) and return its campaign_run_id.

    `earlier_share` of the audience also got an email of another campaign a week before;
    `background_per_person` other activities per person lie in the year before."""
    sql = queries("reporting_synthetic.sql")
    params = {
        "campaign_name": campaign_name,
        "people": people,
        "seed": seed,
        "control_share": control_share,
        "window_days": window_days,
        "sent_at": sent_at or datetime(2026, 10, 1, 9, tzinfo=UTC),
        "sku": SYNTHETIC_SKU,
        "price_cents": truth.price_cents,
        "base_rate": truth.base_rate,
        "uplift": truth.uplift,
        "definition": json.dumps(definition(window_days)),
        "earlier_share": earlier_share,
        "background_per_person": background_per_person,
    }
    with engine.begin() as conn:
        params["first_contact"] = conn.execute(sql["people"], params).scalar_one()
        conn.execute(sql["campaign"], params)
        conn.execute(sql["product"], params)
        params["run"] = conn.execute(sql["run"], params).scalar_one()
        for step in ("waterfall", "audience", "counts", "messages", "events", "conversions"):
            conn.execute(sql[step], params)
        if earlier_share:
            conn.execute(sql["earlier_campaign"], params)
            conn.execute(sql["earlier_history"], params)
        if background_per_person:
            conn.execute(sql["background"], params)
    with engine.connect() as conn:
        conn.execute(sql["analyze"])
        conn.commit()
    return params["run"]
