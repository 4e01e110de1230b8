"""Rendering: the HTML and PDF report of a campaign run, and the index of all runs.

    <reports>/<campaign>/run_<campaign_run_id>.html   one self-contained file (CSS and SVG charts inline)
    <reports>/<campaign>/run_<campaign_run_id>.pdf    the same figures and words (matplotlib's PDF backend)
    <reports>/<campaign>/run_<campaign_run_id>.json   the headline figures, read by the index page
    <reports>/index.html                              every run at a glance

<reports> is KMS_REPORTS_DIR, default <KMS_HOME>/reports (never the git checkout). Files are
written to a temporary name and renamed, so a reader (the Airflow UI page) never sees half
a report. Rendering again replaces the files: the daily DAG refreshes runs whose response
window is still open.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from sqlalchemy.engine import Engine

from campaign_lib.config import PROJECT_ROOT, load_settings
from campaign_lib.errors import ConfigError
from campaign_lib.reporting import charts, wording
from campaign_lib.reporting.attribution import MODEL_NAMES
from campaign_lib.reporting.metrics import CampaignReport, compute_report, report_model
from campaign_lib.reporting.responses import load_responses
from campaign_lib.reporting.stats import BOOTSTRAP_RESAMPLES
from campaign_lib.sqlfiles import queries

TEMPLATES = PROJECT_ROOT / "templates" / "reports"
STYLESHEET = PROJECT_ROOT / "reports" / "report.css"
INDEX = "index.html"


def reports_folder(environ: dict[str, str] | None = None) -> Path:
    """Where reports are written: KMS_REPORTS_DIR, default <KMS_HOME>/reports."""
    env = os.environ if environ is None else environ
    return Path(env.get("KMS_REPORTS_DIR") or load_settings(env).home / "reports").resolve()


def report_paths(out_dir: Path, campaign_name: str, campaign_run_id: int) -> dict[str, Path]:
    """The files of one run's report: html, pdf and json."""
    stem = out_dir / campaign_name / f"run_{campaign_run_id}"
    return {suffix: stem.with_suffix(f".{suffix}") for suffix in ("html", "pdf", "json")}


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "not yet"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    env.globals.update(
        percent=wording.percent,
        points=wording.points,
        count=wording.count,
        when=_when,
        css=Markup(STYLESHEET.read_text(encoding="utf-8")),
    )
    return env


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _summary(report: CampaignReport, paths: dict[str, Path]) -> dict[str, Any]:
    currency = report.responses.currency
    inc = report.increment
    return {
        "campaign_run_id": report.responses.campaign_run_id,
        "campaign_name": report.responses.campaign_name,
        "computed_at": report.computed_at.isoformat(),
        "first_sent_at": report.responses.first_sent_at.isoformat()
        if report.responses.first_sent_at
        else None,
        "window_closes_at": report.responses.window_closes_at.isoformat(),
        "provisional": report.window_is_open,
        "currency": currency,
        "model": report.model,
        "treated_people": inc.treated_people,
        "control_people": inc.control_people,
        "treated_converters": inc.treated_converters,
        "control_converters": inc.control_converters,
        "cost": report.cost,
        "cost_text": wording.money(report.cost, currency),
        "attributed_revenue": report.attributed_revenue,
        "attributed_revenue_text": wording.money(report.attributed_revenue, currency),
        "roi": report.roi,
        "uplift": [inc.uplift.estimate, inc.uplift.low, inc.uplift.high],
        "uplift_significant": inc.significant,
        "incremental_revenue": [
            report.incremental_revenue.estimate,
            report.incremental_revenue.low,
            report.incremental_revenue.high,
        ],
        "incremental_revenue_text": wording.money(report.incremental_revenue.estimate, currency),
        "revenue_significant": report.revenue_significant,
        "minimum_detectable_effect": report.minimum_detectable_effect,
        "verdict": wording.earned_more_than_nothing(report),
        "verdict_reason": wording.verdict_reason(report),
        "headline": wording.headline(report),
        "html": paths["html"].name,
        "pdf": paths["pdf"].name,
    }


def _text_page(report: CampaignReport) -> Figure:
    """The PDF's first page: the headline sentences and the increment in words."""
    page = Figure(figsize=(8.27, 11.69))
    r = report.responses
    page.text(0.08, 0.95, r.campaign_name.replace("_", " ").capitalize(), fontsize=18, weight="bold")
    page.text(
        0.08,
        0.925,
        f"Campaign run {r.campaign_run_id} · first message {_when(r.first_sent_at)} · "
        f"response window {r.response_window_days} days",
        fontsize=9,
        color="#555",
    )
    facts = [
        ("It cost", wording.money(report.cost, r.currency)),
        ("It earned (credited)", wording.money(report.attributed_revenue, r.currency)),
        ("Return on investment", wording.percent(report.roi, 0)),
        ("Earned more than doing nothing?", wording.earned_more_than_nothing(report)),
    ]
    for column, (label, value) in enumerate(facts):
        page.text(0.08 + column * 0.22, 0.87, label, fontsize=7.5, color="#666")
        page.text(0.08 + column * 0.22, 0.845, value, fontsize=12, weight="bold")
    page.text(
        0.08,
        0.82,
        "\n".join(textwrap.wrap("Earned more than doing nothing: " + wording.verdict_reason(report), 130)),
        fontsize=8,
        color="#555",
        va="top",
    )
    y = 0.78
    for sentence in [*wording.headline(report), wording.detection_sentence(report)]:
        lines = textwrap.wrap(sentence, 95)
        page.text(0.08, y, "• " + "\n  ".join(lines), fontsize=9.5, va="top", linespacing=1.4)
        y -= 0.022 * len(lines) + 0.012
    table = page.add_axes((0.08, y - 0.2, 0.84, 0.18))
    table.axis("off")
    table.set_title("The increment over the control group (95 % intervals)", loc="left", fontsize=10)
    cells = table.table(
        cellText=_increment_rows(report),
        colLabels=["", "got the campaign", "control group", "difference", "significant?"],
        colWidths=[0.2, 0.14, 0.13, 0.41, 0.12],
        loc="upper left",
        cellLoc="right",
    )
    cells.auto_set_font_size(False)
    cells.set_fontsize(7.5)
    cells.scale(1, 1.3)
    charts.draw_revenue(page.add_axes((0.1, 0.06, 0.82, y - 0.32)), report)
    return page


def _increment_rows(report: CampaignReport) -> list[list[str]]:
    inc, currency = report.increment, report.responses.currency
    money = lambda value: wording.money(value, currency)  # noqa: E731 - a formatter passed around
    interval = lambda i, shown: f"{shown(i.estimate)} ({shown(i.low)} to {shown(i.high)})"  # noqa: E731
    yes_no = lambda significant: "yes" if significant else "NO"  # noqa: E731
    return [
        ["people", wording.count(inc.treated_people), wording.count(inc.control_people), "", ""],
        [
            "bought",
            wording.count(inc.treated_converters),
            wording.count(inc.control_converters),
            interval(report.incremental_conversions, wording.count) + " extra",
            "",
        ],
        [
            "conversion rate",
            wording.percent(inc.treated_rate.estimate, 2),
            wording.percent(inc.control_rate.estimate, 2),
            interval(inc.uplift, wording.points),
            yes_no(inc.significant),
        ],
        [
            "revenue per person",
            money(report.treated_revenue_per_person),
            money(report.control_revenue_per_person),
            interval(report.revenue_per_person_uplift, money),
            yes_no(report.revenue_significant),
        ],
        [
            "incremental revenue",
            "",
            "",
            interval(report.incremental_revenue, money),
            yes_no(report.revenue_significant),
        ],
    ]


def _table_page(report: CampaignReport) -> Figure:
    """The PDF's last page: the per-channel figures and the attribution comparison."""
    page = Figure(figsize=(8.27, 11.69))
    currency = report.responses.currency
    top = page.add_axes((0.05, 0.55, 0.9, 0.4))
    top.axis("off")
    top.set_title("Channels side by side", loc="left")
    rows = [
        [
            c.channel,
            wording.money(c.cost, currency),
            wording.money(c.attributed_revenue, currency),
            wording.percent(c.roi, 0),
            wording.percent(c.increment.treated_rate.estimate, 2),
            wording.percent(c.increment.control_rate.estimate, 2),
            wording.points(c.increment.uplift.estimate) + ("" if c.increment.significant else " (n.s.)"),
        ]
        for c in report.channels
    ]
    header = ["channel", "cost", "credited revenue", "ROI", "rate", "control rate", "uplift"]
    if rows:
        top.table(cellText=rows, colLabels=header, loc="upper left").auto_set_font_size(True)
    bottom = page.add_axes((0.05, 0.08, 0.9, 0.42))
    bottom.axis("off")
    bottom.set_title(f"Credited revenue by attribution model (report uses: {report.model_name})", loc="left")
    labels = _comparison_labels(report)
    if labels:
        cells = [
            [label]
            + [
                wording.money(report.model_comparison[m][label].value, currency)
                if label in report.model_comparison[m]
                else wording.money(0, currency)
                for m in report.model_comparison
            ]
            for label in labels
        ]
        table = bottom.table(cellText=cells, colLabels=["touch", *report.model_comparison], loc="upper left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
    return page


def _comparison_labels(report: CampaignReport) -> list[str]:
    return sorted({label for credits in report.model_comparison.values() for label in credits})


def _write_pdf(pages: list[Figure], report: CampaignReport, path: Path) -> None:
    with PdfPages(
        path,
        metadata={
            "Title": f"{report.responses.campaign_name} run {report.responses.campaign_run_id}",
            "Creator": "kms",
            "CreationDate": None,
        },
    ) as pdf:
        for page in pages:
            pdf.savefig(page)


def render_campaign_report(
    engine: Engine,
    campaign_run_id: int,
    out_dir: Path | None = None,
    *,
    model: str | None = None,
    now: datetime | None = None,
    stage_seconds: dict[str, float] | None = None,
    page_images: bool = False,
) -> Path:
    """Render the report of a campaign run (HTML, PDF and its summary for the index) and
    return the HTML file's path. `model` is the attribution model (default: KMS_ATTRIBUTION_MODEL
    or last touch); `stage_seconds`, when given, receives the seconds each stage took;
    `page_images` also writes each PDF page as `run_<id>_page<n>.png` (for screenshots).
    ConfigError for an unknown run or one without a frozen audience."""
    started = time.perf_counter()
    chosen = model or report_model()
    responses = load_responses(engine, campaign_run_id, paths=chosen == "markov")
    queried = time.perf_counter()
    report = compute_report(responses, model=chosen, now=now)
    computed = time.perf_counter()
    figures = charts.all_charts(report)
    inline = {name: Markup(charts.svg(figure)) for name, figure in figures.items()}
    drawn = time.perf_counter()
    folder = out_dir or reports_folder()
    paths = report_paths(folder, responses.campaign_name, campaign_run_id)
    currency = responses.currency
    html = (
        _environment()
        .get_template("campaign_report.html.j2")
        .render(
            report=report,
            charts=inline,
            headline=wording.headline(report),
            verdict=wording.earned_more_than_nothing(report),
            verdict_reason=wording.verdict_reason(report),
            detection=wording.detection_sentence(report),
            money=lambda value: wording.money(value, currency),
            sent=sum(f.sent for f in responses.funnel),
            resamples=BOOTSTRAP_RESAMPLES,
            models=[(name, MODEL_NAMES[name]) for name in report.model_comparison],
            comparison_labels=_comparison_labels(report),
            pdf_name=paths["pdf"].name,
        )
    )
    _write_atomically(paths["html"], lambda p: p.write_text(html, encoding="utf-8"))
    written = time.perf_counter()
    pages = [_text_page(report), *figures.values(), _table_page(report)]
    _write_atomically(paths["pdf"], lambda p: _write_pdf(pages, report, p))
    if page_images:
        for number, page in enumerate(pages, start=1):
            image = paths["html"].with_name(f"{paths['html'].stem}_page{number}.png")
            _write_atomically(image, lambda p, page=page: page.savefig(p, format="png", dpi=110))
    summary = json.dumps(_summary(report, paths), indent=2)
    _write_atomically(paths["json"], lambda p: p.write_text(summary, encoding="utf-8"))
    if stage_seconds is not None:
        stage_seconds.update(
            query=queried - started,
            statistics=computed - queried,
            charts=drawn - computed,
            html=written - drawn,
            pdf=time.perf_counter() - written,
        )
    return paths["html"]


def latest_run(engine: Engine, campaign_name: str) -> int:
    """The newest campaign run of `campaign_name` with a frozen audience; ConfigError if none."""
    with engine.connect() as conn:
        run_id = conn.execute(
            queries("reporting.sql")["latest_run"], {"campaign_name": campaign_name}
        ).scalar_one_or_none()
    if run_id is None:
        raise ConfigError(f"campaign {campaign_name!r} has no run with a frozen audience")
    return run_id


def runs_to_refresh(engine: Engine, now: datetime | None = None) -> list[int]:
    """Campaign runs whose report should be rendered again: their response window is still
    open (or closed less than a day ago, so the final figures get written once more)."""
    moment = now or datetime.now(UTC)
    refresh = []
    with engine.connect() as conn:
        for run in conn.execute(queries("reporting.sql")["reported_runs"]):
            if run.first_sent_at is None:
                continue
            closes = run.first_sent_at + timedelta(days=run.response_window_days + 1)
            if moment < closes:
                refresh.append(run.campaign_run_id)
    return refresh


def render_index(engine: Engine, out_dir: Path | None = None, *, now: datetime | None = None) -> Path:
    """Render the index page of all campaign runs (from their reports' summaries) and return
    its path."""
    folder = out_dir or reports_folder()
    rows = []
    with engine.connect() as conn:
        for run in conn.execute(queries("reporting.sql")["reported_runs"]).mappings():
            paths = report_paths(folder, run["campaign_name"], run["campaign_run_id"])
            summary = (
                json.loads(paths["json"].read_text(encoding="utf-8")) if paths["json"].is_file() else None
            )
            rows.append(
                {
                    **run,
                    "summary": summary,
                    "html": paths["html"].relative_to(folder).as_posix(),
                    "pdf": paths["pdf"].relative_to(folder).as_posix(),
                }
            )
    html = _environment().get_template("index.html.j2").render(rows=rows, now=now or datetime.now(UTC))
    path = folder / INDEX
    _write_atomically(path, lambda p: p.write_text(html, encoding="utf-8"))
    return path
