"""Reporting: responses, attribution, ROI and the increment over the control group, the report.

Modules:
    stats        Wilson and Newcombe intervals, the revenue bootstrap, minimum detectable effect
    attribution  last/first touch, linear, time decay, position based, Markov chain (removal effect)
    responses    what a run got back, read with sql/reporting.sql: deliveries, responses, conversions
    metrics      the report's figures: cost, attributed revenue, ROI, increment with intervals
    wording      numbers and headline sentences for people (HTML, PDF and email say the same)
    charts       the matplotlib charts (waterfall, funnel per channel, revenue over time, channels)
    report       the HTML and PDF report of a run, its summary, and the index of all runs
    mailer       a report by email: the HTML inline, the PDF attached
    power        the minimum-detectable-effect line of `kms campaign validate`

docs/reporting.md explains the report to its readers; ADR 0012 gives the reasons.
"""

__all__ = ["render_campaign_report", "render_index", "reports_folder"]


def __getattr__(name: str):
    # The public entry points load matplotlib and Jinja2; importing a light module of this
    # package (web, stats) must not pay for them.
    if name in __all__:
        from campaign_lib.reporting import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
