"""Delivery: a campaign run's outbox, sent exactly once per person, channel and run (ADR 0010).

    materialise_outbox(engine, run_id)       the frozen audience becomes campaign.message rows
    plan_batches(engine, run_id)             {channel: [batch_no, ...]} with work left
    deliver_run_batch(engine, run_id, channel, batch_no, connector_factory, options)
                                             one mapped task's work (render + send + record),
                                             inside the campaign's send window unless send_now=True
    deliver_run(engine, run_id, {channel: (connector_factory, options)})
                                             a whole run in one process (CLI, demo, benchmark)
    finish_delivery(engine, run_id)          reconcile leftovers, complete, summarise
    reconcile / resume_delivery / delivery_state   for `kms delivery` and ops

No Airflow here: the DAG tasks get connectors from campaign_lib.airflow_adapter.
"""

from campaign_lib.delivery.outbox import (
    DEFAULT_POLICY,
    DeliverySettings,
    DeliveryState,
    Reconciliation,
    delivery_state,
    finish_delivery,
    materialise_outbox,
    plan_batches,
    reconcile,
    resume_delivery,
)
from campaign_lib.delivery.runs import campaign_of_run, deliver_run, deliver_run_batch, send_options
from campaign_lib.delivery.sender import BatchResult, SendOptions, deliver_batch

__all__ = [
    "DEFAULT_POLICY",
    "BatchResult",
    "DeliverySettings",
    "DeliveryState",
    "Reconciliation",
    "SendOptions",
    "campaign_of_run",
    "deliver_batch",
    "deliver_run",
    "deliver_run_batch",
    "delivery_state",
    "finish_delivery",
    "materialise_outbox",
    "plan_batches",
    "reconcile",
    "resume_delivery",
    "send_options",
]
