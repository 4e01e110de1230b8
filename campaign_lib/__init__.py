"""kms: a campaign management system on Apache Airflow.

The domain lives here and does not import Airflow, so it can be tested and
benchmarked without a scheduler.
"""
