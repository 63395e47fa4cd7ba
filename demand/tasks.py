"""Celery tasks of demand: thin interfaces over its capture."""

from celery import shared_task

from demand import capture


@shared_task(name="demand.flush_demand", acks_late=True, ignore_result=True)
def flush_demand() -> int:
    """Write the demand counters of selling drops to the database (every few seconds)."""
    return capture.demand_flush_selling()
