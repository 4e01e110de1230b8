"""The values the schema's lookup tables and enums hold after migration 0001, and where the
feed files are: shared by the feed loader and the selection language.

A module without heavy imports, so the selection language (and the DAG files and commands
that list selections) can check names without loading the ingest stack.
"""

from campaign_lib.config import PROJECT_ROOT

FEEDS_DIR = PROJECT_ROOT / "feeds"

# Values that reference tables and enums of the schema accept (sql/migrations 0001). A feed
# may add a source system (`source_system` with `source_name`) and activity types
# (`activity_types`); they are registered in the core tables when the feed loads.
SOURCE_SYSTEMS = ("crm", "hotel_pms", "restaurant_pos", "shop_pos", "ticketing", "website")
ACTIVITY_TYPES = (
    "hotel_stay", "restaurant_bill", "bar_bill", "shop_purchase", "water_park_ticket",
    "dolphinarium_ticket", "web_registration", "web_login", "web_page_view", "newsletter_signup",
    "comment", "rating", "call",
)  # fmt: skip
ACCOUNT_TYPES = ("household", "company")
CHANNELS = ("email", "sms", "push", "phone", "post")
CONSENT_STATUSES = ("opt_in", "opt_out")
