"""Text output of `kms identity resolve|evaluate`; campaign_lib.cli wires the commands."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from campaign_lib.identity.evaluate import evaluate
from campaign_lib.identity.resolve import resolve


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value:>12}" for label, value in rows)


def resolve_command(engine: Engine) -> str:
    """Run identity resolution and return its summary as a short table."""
    summary = resolve(engine).as_dict()
    stages = summary.pop("stage_seconds")
    rows = [
        (name.replace("_", " "), f"{value}" if isinstance(value, bool) else f"{value:,}")
        for name, value in summary.items()
    ]
    rows += [(f"  {stage} seconds", f"{seconds:,}") for stage, seconds in stages.items()]
    return _table(rows)


def evaluate_command(engine: Engine, ground_truth: Path) -> str:
    """Evaluate the resolved contacts against a ground-truth file; a short table."""
    e = evaluate(engine, ground_truth)
    return _table(
        [
            ("records in ground truth", f"{e.records_in_ground_truth:,}"),
            ("  not loaded", f"{e.records_missing:,}"),
            ("  unidentifiable (excluded)", f"{e.records_unidentifiable:,}"),
            ("  anonymous cookie (excluded)", f"{e.records_anonymous_cookie:,}"),
            ("  evaluated", f"{e.records_evaluated:,}"),
            ("  evaluated, without contact", f"{e.records_without_contact:,}"),
            ("true persons", f"{e.persons:,}"),
            ("contacts", f"{e.contacts:,}"),
            ("true pairs", f"{e.true_pairs:,}"),
            ("predicted pairs", f"{e.predicted_pairs:,}"),
            ("correct pairs", f"{e.correct_pairs:,}"),
            ("precision", f"{e.precision:.4f}"),
            ("recall", f"{e.recall:.4f}"),
            ("F1", f"{e.f1:.4f}"),
        ]
    )
