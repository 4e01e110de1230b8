"""Airflow plugin: the kms ingest API inside Airflow's API server, under /kms.

    POST /kms/api/v1/events, /kms/api/v1/contacts    (API key in X-API-Key)
    GET  /kms/api/v1/health, /kms/api/v1/openapi.json, /kms/api/v1/docs
    GET  /kms/t/o/<token>.gif, /kms/t/c/<token>; GET+POST /kms/t/u/<token>   (signed tracking links)
    POST /kms/t/webhooks/sms|push|email                                    (provider signatures)

Airflow does not authenticate a plugin's FastAPI app: the app checks its own API keys on
the ingest paths, tokens on the tracking links and signatures on the webhooks
(docs/tracking.md). This file stays thin: building the app imports FastAPI, SQLAlchemy and
Jinja2 only and connects to nothing; the database is opened at the first request, from the
Airflow connection `kms_db` or KMS_DATABASE_URL.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from campaign_lib.api import create_app


def _campaign_engine():
    """The campaign database: KMS_DATABASE_URL when set, else the Airflow connection kms_db."""
    from campaign_lib.api.server import MAX_OVERFLOW, POOL_SIZE
    from campaign_lib.config import load_settings
    from campaign_lib.db import make_engine

    url = load_settings().database_url
    if url is None:
        from campaign_lib.airflow_adapter import campaign_database_url

        url = campaign_database_url()
    return make_engine(url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)


def _tracking_settings():
    """The tracking endpoints' settings, with the links of the Airflow connection kms_tracking
    when there is one (the secret the delivery tasks sign with), else of the environment."""
    from campaign_lib.airflow_adapter import tracking_links
    from campaign_lib.tracking.settings import tracking_settings_from_env

    return tracking_settings_from_env(links=tracking_links())


class KmsApiPlugin(AirflowPlugin):
    name = "kms_api"
    fastapi_apps = [  # noqa: RUF012 - Airflow reads this class attribute
        {
            "app": create_app(_campaign_engine, tracking=_tracking_settings),
            "url_prefix": "/kms",
            "name": "kms ingest and tracking API",
        }
    ]
