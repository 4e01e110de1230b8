"""Reports invalid campaign definitions (campaigns/*.yaml) as this file's DAG import error.

kms_campaigns.py builds one DAG per valid definition and skips the invalid ones, so one
broken file never takes the other campaign DAGs down with it (an import error of the
factory's own file would mark all of its DAGs stale). This file holds no DAG: it only
raises, listing every invalid definition as `campaigns/<file>: <field>: <problem>`, so the
Airflow UI's import errors name the file, the field and the problem. ADR 0009.
"""

from campaign_lib.campaign.definition import load_campaigns
from campaign_lib.errors import ConfigError

_invalid = load_campaigns()[1]
if _invalid:
    raise ConfigError(
        f"{len(_invalid)} invalid campaign definition(s); their DAGs are not built:\n"
        + "\n".join(_invalid.values())
    )
