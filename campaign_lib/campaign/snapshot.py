"""Campaign runs and their frozen audience snapshots.

A run is keyed by the Airflow DAG id and run id. `freeze_audience` runs the funnel once per
run key and writes the waterfall and the audience (control group included) in one
transaction; afterwards the snapshot never changes, and calling it again for the same key
(a retry, a cleared task) returns the stored counts without running the funnel. A dry run
records the waterfall only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from campaign_lib.campaign.funnel import FunnelSpec, Waterfall, WaterfallStep, drop_work_tables, run_funnel
from campaign_lib.errors import ConfigError
from campaign_lib.sqlfiles import queries

FINISHED = ("frozen", "approved", "dry_run")


@dataclass(frozen=True)
class RunKey:
    """An Airflow run: the campaign run it makes is unique per key."""

    dag_id: str
    run_id: str


@dataclass(frozen=True)
class CampaignRecord:
    """What campaign.campaign keeps of a definition."""

    name: str
    origin: str
    owner: str | None
    description: str | None
    version: str
    definition: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """A finished campaign run: its id, status and waterfall; `reused` when it was already finished."""

    campaign_run_id: int
    campaign: str
    status: str
    selection_version: str
    as_of: datetime
    waterfall: Waterfall
    reused: bool

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for XCom and the audience asset's event."""
        return {
            "campaign_run_id": self.campaign_run_id,
            "campaign": self.campaign,
            "status": self.status,
            "selection_version": self.selection_version,
            "as_of": self.as_of.isoformat(),
            "reused": self.reused,
            **self.waterfall.as_dict(),
        }


def register_campaign(engine: Engine, record: CampaignRecord) -> None:
    """Record a definition and its version in campaign.campaign (unchanged: no write)."""
    with engine.begin() as conn:
        conn.execute(
            queries("campaign.sql")["register_campaign"],
            {
                "campaign_name": record.name,
                "origin": record.origin,
                "owner": record.owner,
                "description": record.description,
                "definition_version": record.version,
                "definition": json.dumps(record.definition, default=_json_value),
            },
        )


def freeze_audience(
    engine: Engine,
    record: CampaignRecord,
    spec: FunnelSpec,
    selection,
    params: dict[str, object],
    key: RunKey,
    *,
    dry_run: bool = False,
    as_of: datetime | None = None,
) -> RunResult:
    """The run of `key`: run the funnel and freeze its audience, or return the finished run.

    `selection` is a campaign_lib.selection.Selection and `params` its bound parameters.
    Returns the run with its waterfall; raises what the selection or funnel raised, after
    marking the run failed (the next attempt of the same key starts it over).
    """
    sql = queries("campaign.sql")
    register_campaign(engine, record)
    values = {
        "campaign_name": record.name,
        "dag_id": key.dag_id,
        "run_id": key.run_id,
        "dry_run": dry_run,
        "definition_version": record.version,
        "selection_name": selection.name,
        "selection_version": selection.version,
        "params": json.dumps(params, default=_json_value),
    }
    with engine.begin() as conn:
        existing = conn.execute(sql["find_run"], values).mappings().one_or_none()
        if existing is not None and existing["status"] in FINISHED:
            return _stored(conn, existing)
        if existing is None:
            run_id, run_as_of = conn.execute(
                sql["create_run"], values | {"as_of": as_of or datetime.now(UTC)}
            ).one()
        else:
            run_id, run_as_of = existing["campaign_run_id"], existing["as_of"]
            conn.execute(sql["restart_run"], values | {"campaign_run_id": run_id})
            conn.execute(sql["clear_unfinished_run"], {"campaign_run_id": run_id})

    with engine.connect() as conn:
        try:
            waterfall = run_funnel(conn, spec, selection, params, run_as_of)
            with conn.begin():
                current = conn.execute(sql["find_run"], values).mappings().one()
                if current["status"] in FINISHED:
                    # Another attempt of the same key finished first; its snapshot stands.
                    return _stored(conn, current)
                for step in waterfall.steps:
                    conn.execute(
                        sql["insert_waterfall_step"],
                        {"campaign_run_id": run_id, **step.__dict__, "detail": json.dumps(step.detail)},
                    )
                if not dry_run:
                    conn.execute(
                        sql["insert_audience"],
                        {
                            "campaign_run_id": run_id,
                            "offer_sku": spec.offer_sku,
                            "selection_version": selection.version,
                        },
                    )
                conn.execute(
                    sql["finish_run"],
                    {
                        "campaign_run_id": run_id,
                        "status": "dry_run" if dry_run else "frozen",
                        "audience_count": waterfall.audience,
                        "control_count": waterfall.control,
                    },
                )
        except BaseException:
            _mark_failed(conn, run_id)
            raise
        finally:
            if not conn.invalidated:
                drop_work_tables(conn)
    return RunResult(
        campaign_run_id=run_id,
        campaign=record.name,
        status="dry_run" if dry_run else "frozen",
        selection_version=selection.version,
        as_of=run_as_of,
        waterfall=waterfall,
        reused=False,
    )


def approve_run(engine: Engine, campaign_run_id: int) -> None:
    """Mark a frozen run approved for delivery; ConfigError when it is not frozen."""
    with engine.begin() as conn:
        approved = conn.execute(
            queries("campaign.sql")["approve_run"], {"campaign_run_id": campaign_run_id}
        ).one_or_none()
    if approved is None:
        raise ConfigError(f"campaign run {campaign_run_id} is not frozen and cannot be approved")


def _mark_failed(conn: Connection, run_id: int) -> None:
    """Record a failed attempt when the database still answers. When it does not, the run
    stays 'selecting', which the next attempt of its key restarts just the same."""
    try:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            conn.execute(queries("campaign.sql")["fail_run"], {"campaign_run_id": run_id})
    except DBAPIError:
        return


def _stored(conn, run) -> RunResult:
    rows = conn.execute(
        queries("campaign.sql")["run_waterfall"], {"campaign_run_id": run["campaign_run_id"]}
    ).mappings()
    steps = [WaterfallStep(**row) for row in rows]
    return RunResult(
        campaign_run_id=run["campaign_run_id"],
        campaign=run["campaign_name"],
        status=run["status"],
        selection_version=run["selection_version"],
        as_of=run["as_of"],
        waterfall=Waterfall.from_steps(steps),
        reused=True,
    )


def _json_value(value: object) -> object:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if hasattr(value, "__float__"):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
