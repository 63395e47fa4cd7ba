"""Ops warnings for cron: scheduled streams whose planned drops will not be covered.

    python manage.py check_readiness [--within HOURS] [--json]

One line per problem (``<start> <stream> drop #<id> <sku>: <problem>: <what the report
says>; <what would cover it>``), exit status 1 when there is any problem and 0 when
there is none, so a cron job mails only when something needs doing. Problems:
``demand_exceeds_stock`` (expected demand beyond the drop and the free stock: restock),
``demand_exceeds_drop`` (beyond the drop, free stock covers it: add units),
``quantity_exceeds_on_hand`` (the drop promises more than is on hand).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from demand import readers


class Command(BaseCommand):
    help = "List scheduled streams whose planned drops exceed their stock; exit 1 if any."

    def add_arguments(self, parser):
        parser.add_argument(
            "--within",
            type=float,
            metavar="HOURS",
            help="Only streams scheduled to start within this many hours from now.",
        )
        parser.add_argument("--json", action="store_true", help="One JSON document.")

    def handle(self, *args, **options):
        within = options["within"]
        if within is not None and within <= 0:
            raise CommandError("--within must be a positive number of hours.")
        now = timezone.now()
        found = readers.streams_with_problems(now=now, within_hours=within)
        problems = [
            {
                "stream": stream.slug,
                "scheduled_start": stream.scheduled_start.isoformat()
                if stream.scheduled_start
                else None,
                "drop": row.drop,
                "sku": row.sku,
                "problem": problem,
                "verdict": row.assessment.verdict,
                "message": row.assessment.message,
                "cover": row.assessment.cover,
                "quantity": row.quantity,
                "stock_on_hand": row.stock_on_hand,
                "stock_free": row.stock_free,
                "shortfall": row.assessment.shortfall,
            }
            for stream, report in found
            for row, problem in report.problems
        ]
        if options["json"]:
            self.stdout.write(
                json.dumps({"checked_at": now.isoformat(), "problems": problems}, indent=2)
            )
        else:
            for p in problems:
                self.stdout.write(_line(p))
        if problems:
            # The one way a management command sets a non-zero exit status.
            raise SystemExit(1)


def _line(p: dict) -> str:
    start = p["scheduled_start"] or "unscheduled"
    text = f"{start} {p['stream']} drop #{p['drop']} {p['sku']}: {p['problem']}: "
    if p["problem"] == "quantity_exceeds_on_hand":
        text += f"{p['quantity']} units on sale but {p['stock_on_hand']} on hand"
    else:
        text += p["message"]
    return f"{text} {p['cover']}".rstrip()
