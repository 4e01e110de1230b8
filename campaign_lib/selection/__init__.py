"""Selections: who a campaign is for, written as YAML rules or a read-only SQL file.

    selection = load_selection("hotel_guests_without_water_park")     # checked; SelectionError
    query = selection.query({"stay_within_days": 180})                # SELECT contact_id ...
    with engine.connect() as conn:
        ids = contact_ids(conn, selection, {"stay_within_days": 180})  # read-only, timed out

The language is described for campaign managers in docs/selections.md; the pieces are
language.py (what may be written), loader.py (files, parameters, versions), compiler.py
(SQLAlchemy Core) and run.py (read-only execution).
"""

from campaign_lib.errors import SelectionError
from campaign_lib.selection.loader import (
    ParamSpec,
    Selection,
    list_selections,
    load_selection,
    selections_folder,
)
from campaign_lib.selection.run import check_selection, contact_ids, materialize, read_only

__all__ = [
    "ParamSpec",
    "Selection",
    "SelectionError",
    "check_selection",
    "contact_ids",
    "list_selections",
    "load_selection",
    "materialize",
    "read_only",
    "selections_folder",
]
