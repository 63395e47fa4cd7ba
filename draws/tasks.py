"""Celery tasks of draws: thin interfaces over the services. This module is also the
services' close queue (``draws.close_queue``)."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task

from draws import announce, services


@shared_task(name="draws.run_draw", acks_late=True, ignore_result=True)
def run_draw(draw_id: int) -> bool:
    """The draw, due at its close (idempotent: a second run, or one racing the sweep,
    changes nothing)."""
    return services.draw_run(draw_id=draw_id) is not None


@shared_task(name="draws.run_due", ignore_result=True)
def run_due() -> dict[str, int]:
    """Every few seconds (beat): draws whose close passed without their task having run
    (a worker down at the time, a lost message), and entry counts whose coalescing
    window died with its process."""
    return {"drawn": services.draws_run_due(), "counts": announce.entries_coalescer.sweep()}


def close_at(*, draw_id: int, at: datetime) -> None:
    # Eagerly (no broker: the embedded default and tests) this runs at once, finds the
    # entries still open and does nothing; the sweep draws it after the close.
    run_draw.apply_async(args=[draw_id], eta=at)
