"""The rendered report: HTML and PDF with their charts, the index page, the planted truth
recovered, a zero effect called not significant, `kms report`, and the daily DAG."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.reporting import render_campaign_report, render_index
from campaign_lib.reporting.metrics import compute_report
from campaign_lib.reporting.responses import load_responses
from campaign_lib.reporting.synthetic import Truth, build_synthetic_run

PLANTED = Truth(base_rate=0.03, uplift=0.02, price_cents=2500)
KMS = str(Path(sys.executable).parent / "kms")


def pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", data))


def test_the_report_is_one_html_file_with_its_charts_a_pdf_and_a_summary(
    clean_db: Engine, tmp_path: Path
) -> None:
    run = build_synthetic_run(
        clean_db,
        campaign_name="summer_offer",
        people=5000,
        truth=PLANTED,
        seed=3,
        earlier_share=0.3,
        background_per_person=3,
    )

    path = render_campaign_report(clean_db, run, tmp_path)

    assert path == tmp_path / "summer_offer" / f"run_{run}.html"
    html = path.read_text(encoding="utf-8")
    assert html.count("<svg") == 4
    for title in (
        "Selection waterfall",
        "per channel",
        "Revenue per person over the response window",
        "Cost and revenue",
    ):
        assert title in html
    assert "src=" not in html and "<link" not in html  # self-contained: nothing loaded from elsewhere
    assert html.index("It cost") < html.index("In short") < html.index("How the audience was chosen")
    assert "last touch" in html
    assert "<td>summer_offer_earlier/email</td>" in html  # journeys across two campaigns
    pdf = path.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf_pages(pdf) == 6
    summary = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert summary["campaign_run_id"] == run and summary["headline"][0].startswith("The campaign cost EUR")
    assert not list(tmp_path.rglob("*.part"))


def test_the_planted_uplift_lies_inside_the_reported_intervals(clean_db: Engine) -> None:
    run = build_synthetic_run(clean_db, campaign_name="planted", people=20_000, truth=PLANTED, seed=1)

    report = compute_report(load_responses(clean_db, run), model="last_touch")

    uplift = report.increment.uplift
    assert uplift.low <= PLANTED.uplift <= uplift.high and report.increment.significant
    revenue = report.revenue_per_person_uplift
    assert revenue.low <= PLANTED.revenue_uplift_per_person <= revenue.high and report.revenue_significant
    assert report.minimum_detectable_effect < PLANTED.uplift


def test_a_campaign_without_effect_is_reported_not_significant(clean_db: Engine, tmp_path: Path) -> None:
    run = build_synthetic_run(
        clean_db, campaign_name="no_effect", people=20_000, truth=Truth(0.03, 0.0, 2500), seed=2
    )

    path = render_campaign_report(clean_db, run, tmp_path)

    summary = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    low, high = summary["uplift"][1:]
    assert low <= 0 <= high and not summary["uplift_significant"] and not summary["revenue_significant"]
    assert summary["verdict"] == "not shown (not significant)"
    html = path.read_text(encoding="utf-8")
    assert "this difference is NOT significant: it may be chance" in html
    assert "NOT significant, the interval includes zero" in html


def test_the_index_compares_every_run_and_names_the_unrendered(clean_db: Engine, tmp_path: Path) -> None:
    shown = build_synthetic_run(clean_db, campaign_name="summer_offer", people=2000, truth=PLANTED, seed=4)
    waiting = build_synthetic_run(clean_db, campaign_name="winter_offer", people=2000, truth=PLANTED, seed=5)
    render_campaign_report(clean_db, shown, tmp_path)

    index = render_index(clean_db, tmp_path).read_text(encoding="utf-8")

    assert (
        f'href="summer_offer/run_{shown}.html"' in index and f'href="summer_offer/run_{shown}.pdf"' in index
    )
    assert "winter offer" in index and f"<td>{waiting}</td>" in index and "no report rendered yet" in index


def test_kms_report_render_and_index_print_where_the_files_are(clean_db: Engine, tmp_path: Path) -> None:
    build_synthetic_run(clean_db, campaign_name="summer_offer", people=1000, truth=PLANTED, seed=6)
    env = {**os.environ, "KMS_REPORTS_DIR": str(tmp_path)}

    rendered = subprocess.run(
        [KMS, "report", "render", "--campaign", "summer_offer", "--model", "markov", "--png"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wrong = subprocess.run(
        [KMS, "report", "render", "--campaign", "summer_offer", "--model", "u_shaped"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert rendered.returncode == 0, rendered.stderr
    assert f"report: {tmp_path}/summer_offer/run_1.html" in rendered.stdout
    assert "Markov chain" in (tmp_path / "summer_offer" / "run_1.html").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (tmp_path / "summer_offer").glob("*.png"))
    assert pages == [f"run_1_page{n}.png" for n in range(1, 7)]
    assert (tmp_path / "summer_offer" / "run_1_page1.png").read_bytes().startswith(b"\x89PNG")
    assert wrong.returncode == 1 and "attribution model must be one of last_touch" in wrong.stderr


def test_the_daily_dag_refreshes_runs_inside_their_window_and_the_index(
    clean_db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("KMS_REPORTS_DIR", str(tmp_path))
    # Messages go out within the hour after sent_at: the window opens between 2 days 2 hours
    # and 2 days 1 hour ago, i.e. on day 2 of 30.
    recent = datetime.now(UTC) - timedelta(days=2, hours=2)
    open_run = build_synthetic_run(
        clean_db, campaign_name="open_window", people=1000, truth=PLANTED, seed=7, sent_at=recent
    )
    build_synthetic_run(clean_db, campaign_name="closed_window", people=1000, truth=PLANTED, seed=8)
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "kms_reports.py")).dags["kms_reports"]

    run = dag.test()

    assert run.state == "success"
    assert (tmp_path / "open_window" / f"run_{open_run}.html").is_file()
    assert not (tmp_path / "closed_window").exists()
    summary = json.loads((tmp_path / "open_window" / f"run_{open_run}.json").read_text(encoding="utf-8"))
    assert summary["provisional"] and "still open (day 2 of 30)" in summary["headline"][0]
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert f'href="open_window/run_{open_run}.html"' in index and "no report rendered yet" in index


def test_a_run_without_control_group_reports_cost_and_revenue_and_says_the_increment_is_unknown(
    clean_db: Engine, tmp_path: Path
) -> None:
    run = build_synthetic_run(
        clean_db, campaign_name="no_control", people=1000, truth=PLANTED, seed=12, control_share=0.0
    )

    path = render_campaign_report(clean_db, run, tmp_path)

    summary = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert summary["control_people"] == 0 and summary["verdict"] == "unknown (no control group)"
    assert summary["headline"][-1] == (
        "There was no control group, so whether it earned more than doing nothing is unknown."
    )
    assert "Without a control group no uplift can be measured" in path.read_text(encoding="utf-8")


def test_a_run_whose_funnel_left_nobody_still_gets_a_report(clean_db: Engine, tmp_path: Path) -> None:
    # Contact pressure or suppressions can leave a run without anyone to send to.
    run = build_synthetic_run(clean_db, campaign_name="nobody_left", people=0, truth=PLANTED, seed=3)

    path = render_campaign_report(clean_db, run, tmp_path)

    summary = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert (summary["treated_people"], summary["control_people"], summary["cost_text"]) == (0, 0, "EUR 350")
    assert "no message was sent" in path.read_text(encoding="utf-8")
    assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
