"""The real-time ingest API: website events and contact profiles over HTTP, with API keys.

    create_app(engine_factory) -> FastAPI          the app (campaign_lib.api.app)
    serve(host, port, engine_url)                  run it standalone with uvicorn (`kms api serve`)
    create_key / revoke_key / list_keys            manage keys (`kms api key ...`)

Importing this package imports FastAPI and SQLAlchemy only; the parser, the loader's
quality gate and identity resolution are imported when the first batch needs them.
"""

from campaign_lib.api.app import create_app
from campaign_lib.api.keys import SCOPES, create_key, list_keys, revoke_key
from campaign_lib.api.server import serve

__all__ = ["SCOPES", "create_app", "create_key", "list_keys", "revoke_key", "serve"]
