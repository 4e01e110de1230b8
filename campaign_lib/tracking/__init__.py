"""Tracking: signed open, click and unsubscribe links, their endpoints, provider receipts.

    tokens      TrackingLinks (build and verify signed URLs), tracking_links_from_env; no
                Airflow, database or web imports, so renderers use it cheaply

Importing this package imports nothing else; the endpoints live in campaign_lib.tracking.routes.
"""
