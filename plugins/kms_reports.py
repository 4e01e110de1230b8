"""Airflow plugin: a "Campaign reports" entry in the UI's navigation, serving the reports.

    GET /kms-reports/                          the index page of all campaign runs
    GET /kms-reports/{campaign}/run_{id}.html  one run's report (.pdf: its PDF)

Only logged-in users see them: every path depends on Airflow's own login check
(`GetUserDep`'s dependency: the UI's cookie or a Bearer token; 401 otherwise). The files
come from KMS_REPORTS_DIR (default <KMS_HOME>/reports), read at each request.
"""

from __future__ import annotations

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends

from campaign_lib.reporting.web import create_reports_app


def _reports_folder():
    from campaign_lib.reporting.report import reports_folder

    return reports_folder()


class KmsReportsPlugin(AirflowPlugin):
    name = "kms_reports"
    fastapi_apps = [  # noqa: RUF012 - Airflow reads this class attribute
        {
            "app": create_reports_app(_reports_folder, dependencies=[Depends(get_user)]),
            "url_prefix": "/kms-reports",
            "name": "kms campaign reports",
        }
    ]
    external_views = [  # noqa: RUF012 - Airflow reads this class attribute
        {
            "name": "Campaign reports",
            "href": "kms-reports/",
            "destination": "nav",
            "url_route": "campaign-reports",
            "category": "browse",
        }
    ]
