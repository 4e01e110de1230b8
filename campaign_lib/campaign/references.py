"""The checks of a campaign definition that need the selections: run by `kms campaign
validate` and by each campaign DAG's first task, not at DAG parse time."""

from __future__ import annotations

from pathlib import Path

from campaign_lib.campaign.definition import CampaignFile, SelectionRef, shown_path
from campaign_lib.errors import ConfigError
from campaign_lib.selection import SelectionError, load_selection


def bound_selection(ref: SelectionRef, label: str, selections: Path | None = None):
    """The selection `ref` names and its bound parameters, as (Selection, params).

    Raises ConfigError `<label>: selection...: <problem>` when the selection does not exist,
    does not load, or refuses the parameters.
    """
    try:
        selection = load_selection(ref.name, selections)
    except SelectionError as exc:
        raise ConfigError(f"{label}: selection.name: {exc}") from exc
    try:
        params = selection.bind(ref.params)
    except SelectionError as exc:
        raise ConfigError(f"{label}: selection.params: {exc}") from exc
    return selection, params


def checked_selection(loaded: CampaignFile, selections: Path | None = None):
    """The selection of a campaign file and its bound parameters (see bound_selection)."""
    return bound_selection(loaded.campaign.selection, shown_path(loaded.path), selections)
