"""What the campaign DAGs and `kms` call: run a campaign, an ad-hoc run, or a preview.

Each function takes an engine and names, loads and checks the definition, and returns
plain results, so the DAG tasks stay thin and pass only ids and small dicts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import Campaign, CampaignFile, definition_version, find_campaign
from campaign_lib.campaign.funnel import FunnelSpec, Waterfall, drop_work_tables, run_funnel
from campaign_lib.campaign.references import bound_selection, checked_selection
from campaign_lib.campaign.settings import load_campaign_settings
from campaign_lib.campaign.snapshot import CampaignRecord, RunKey, RunResult, freeze_audience
from campaign_lib.errors import ConfigError
from campaign_lib.selection import SelectionError, load_selection

NOTE_LIMIT = 1000  # Airflow refuses longer DAG run notes


def validate_campaign(name: str, folder: Path | None = None) -> CampaignFile:
    """The definition `name`, with its selection and parameters checked; ConfigError otherwise."""
    loaded = find_campaign(name, folder)
    checked_selection(loaded)
    return loaded


def run_campaign(engine: Engine, name: str, key: RunKey, *, dry_run: bool = False) -> RunResult:
    """Run the funnel of campaign `name` for an Airflow run and freeze its audience (or only
    record the waterfall when `dry_run`). A rerun of a finished run returns it unchanged."""
    loaded = find_campaign(name)
    selection, params = checked_selection(loaded)
    campaign = loaded.campaign
    record = CampaignRecord(
        name=campaign.name,
        origin="file",
        owner=campaign.owner,
        description=campaign.description,
        version=loaded.version,
        definition=campaign.model_dump(mode="json"),
    )
    spec = FunnelSpec.from_campaign(campaign, load_campaign_settings())
    return freeze_audience(engine, record, spec, selection, params, key, dry_run=dry_run)


def run_adhoc(engine: Engine, campaign: Campaign, key: RunKey, *, dry_run: bool) -> RunResult:
    """Run an ad-hoc campaign (built from a trigger form by definition.adhoc_campaign)."""
    selection, params = bound_selection(campaign.selection, "ad-hoc run")
    definition = campaign.model_dump(mode="json")
    record = CampaignRecord(
        name=campaign.name,
        origin="adhoc",
        owner=campaign.owner,
        description=campaign.description,
        version=definition_version(json.dumps(definition, sort_keys=True).encode()),
        definition=definition,
    )
    spec = FunnelSpec.from_campaign(campaign, load_campaign_settings())
    return freeze_audience(engine, record, spec, selection, params, key, dry_run=dry_run)


def preview(
    engine: Engine,
    selection_name: str,
    params: dict[str, object] | None = None,
    campaign_name: str | None = None,
) -> Waterfall:
    """The waterfall of a selection without writing anything.

    With `campaign_name`, the funnel is that campaign's (channels, consent purpose,
    suppressions, pressure, household, control share, cells, cap) and its selection
    parameters apply under `params`; without, all channels with the default purpose.
    """
    settings = load_campaign_settings()
    try:
        selection = load_selection(selection_name)
        if campaign_name is not None:
            campaign = find_campaign(campaign_name).campaign
            spec = FunnelSpec.from_campaign(campaign, settings)
            values = selection.bind({**campaign.selection.params, **(params or {})})
        else:
            spec = FunnelSpec(
                campaign=f"preview_{selection_name}",
                channels=("email", "sms", "push"),
                purpose=settings.default_purpose,
                pressure_window_days=settings.pressure_window_days,
                max_per_channel=settings.pressure_max_per_channel,
                max_total=settings.pressure_max_total,
                holdout_share=settings.global_holdout_share,
            )
            values = selection.bind(params or {})
    except SelectionError as exc:
        raise ConfigError(str(exc)) from exc
    with engine.connect() as conn:
        try:
            return run_funnel(conn, spec, selection, values, datetime.now(UTC))
        finally:
            drop_work_tables(conn)


def run_note(result: RunResult, *, dry_run: bool) -> str:
    """A short account of a run for the DAG run's note (Airflow keeps at most 1,000 characters)."""
    waterfall = result.waterfall
    head = (
        "Dry run, nothing frozen" if dry_run else f"Audience frozen (campaign run {result.campaign_run_id})"
    )
    flow = " → ".join(
        f"{s.step} {s.count_out:,}" for s in waterfall.steps[1:] if s.removed or s.position == 2
    )
    note = (
        f"{head}: audience {waterfall.audience:,} + control {waterfall.control:,}. "
        f"By channel: {', '.join(f'{k} {v:,}' for k, v in sorted(waterfall.by_channel.items())) or 'none'}. "
        f"Waterfall: {flow}."
    )
    return note if len(note) <= NOTE_LIMIT else note[: NOTE_LIMIT - 1] + "…"
