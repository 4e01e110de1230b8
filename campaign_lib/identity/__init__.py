"""Identity resolution: standardised source records become people, households and their
history, the single customer view.

    resolve(engine, settings=...) -> ResolutionSummary    resolve what is new or changed
    evaluate(engine, ground_truth_path) -> Evaluation     pairwise precision and recall
    reset_resolution(engine)                              forget all results (development)

The rules are in `linking` (which records are one person or household), the ids, merges
and writes in `resolve`, the thresholds in `IdentitySettings`, the SQL in sql/identity.sql.
"""

from campaign_lib.identity.evaluate import Evaluation, evaluate
from campaign_lib.identity.resolve import ResolutionSummary, reset_resolution, resolve
from campaign_lib.identity.settings import IdentitySettings

__all__ = ["Evaluation", "IdentitySettings", "ResolutionSummary", "evaluate", "reset_resolution", "resolve"]
