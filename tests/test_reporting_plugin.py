"""The "Campaign reports" page in Airflow's API server: only for logged-in users, only report files."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from campaign_lib.reporting import render_campaign_report, render_index, reports_folder
from campaign_lib.reporting.synthetic import Truth, build_synthetic_run
from campaign_lib.reporting.web import served_file


@pytest.fixture(scope="module")
def token(api_server: dict) -> str:
    answer = httpx.post(
        f"{api_server['host']}/auth/token", json={"username": "admin", "password": api_server["password"]}
    )
    return answer.json()["access_token"]


@pytest.fixture
def rendered(clean_db: Engine) -> Path:
    """A report and the index in the reports folder the API server reads (KMS_HOME/reports)."""
    run = build_synthetic_run(
        clean_db, campaign_name="summer_offer", people=500, truth=Truth(0.05, 0.0, 1000), seed=9
    )
    path = render_campaign_report(clean_db, run)
    render_index(clean_db)
    return path


def test_the_reports_need_a_login_and_are_listed_and_served_to_a_logged_in_user(
    api_server: dict, token: str, rendered: Path
) -> None:
    base = f"{api_server['host']}/kms-reports"
    bearer = {"Authorization": f"Bearer {token}"}
    report_url = f"{base}/summer_offer/{rendered.name}"

    anonymous = [httpx.get(url) for url in (f"{base}/", report_url)]
    forged = httpx.get(report_url, headers={"Authorization": "Bearer not-a-token"})
    index = httpx.get(f"{base}/", headers=bearer)
    report = httpx.get(report_url, headers=bearer)
    pdf = httpx.get(report_url.replace(".html", ".pdf"), headers=bearer)
    cookie = httpx.get(report_url, cookies={"_token": token})

    # No credentials: 401; a token Airflow cannot verify: 403 (Airflow's own answers).
    assert [r.status_code for r in anonymous] == [401, 401] and forged.status_code == 403
    assert index.status_code == 200 and f'href="summer_offer/{rendered.name}"' in index.text
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert report.text.count("<svg") == 4
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert cookie.status_code == 200


def test_the_plugin_adds_the_nav_entry(api_server: dict, token: str) -> None:
    plugins = httpx.get(
        f"{api_server['host']}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}
    ).json()["plugins"]

    ours = next(p for p in plugins if p["name"] == "kms_reports")
    assert ours["external_views"][0]["name"] == "Campaign reports"
    assert ours["external_views"][0]["href"] == "kms-reports/"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("..%2F..%2F..%2Fetc%2Fpasswd", id="encoded-slashes"),
        pytest.param("summer_offer/..%2F..%2Fsecrets.json", id="dot-dot-in-name"),
        pytest.param("%2e%2e/run_1.html", id="encoded-dot-dot-campaign"),
        pytest.param("summer_offer/run_1.json", id="not-a-report-file"),
        pytest.param("linked/run_1.html", id="symlink-out-of-the-folder"),
        pytest.param("summer_offer/run_999.html", id="missing"),
    ],
)
def test_nothing_but_a_report_file_is_served(api_server: dict, token: str, rendered: Path, path: str) -> None:
    linked = reports_folder() / "linked"
    linked.mkdir(exist_ok=True)
    if not (linked / "run_1.html").is_symlink():
        os.symlink("/etc/passwd", linked / "run_1.html")

    answer = httpx.get(
        f"{api_server['host']}/kms-reports/{path}", headers={"Authorization": f"Bearer {token}"}
    )

    assert answer.status_code == 404
    assert "root:" not in answer.text


@pytest.mark.parametrize(
    ("campaign", "name"),
    [
        ("..", "run_1.html"),
        ("summer_offer", "../run_1.html"),
        ("summer_offer", "run_1.html/../../x"),
        ("Summer", "run_1.html"),
        ("summer_offer", "run_1.htm"),
        ("summer_offer", "run_1.html\x00.pdf"),
    ],
)
def test_served_file_refuses_every_other_shape(tmp_path: Path, campaign: str, name: str) -> None:
    (tmp_path / "summer_offer").mkdir()
    (tmp_path / "summer_offer" / "run_1.html").write_text("x", encoding="utf-8")

    assert served_file(tmp_path, campaign, name) is None
    assert served_file(tmp_path, "summer_offer", "run_1.html") == tmp_path / "summer_offer" / "run_1.html"
