"""The ops warning for cron: ``check_readiness`` lists the planned drops their stock
will not cover, one line each, and says so in its exit status."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from livestream.models import Stream
from tests.factories import StreamFactory, host_with_demand_history, stream_drop

pytestmark = pytest.mark.django_db


def _run(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("check_readiness", *args, stdout=out)
    except SystemExit as exit:
        return exit.code, out.getvalue()
    return 0, out.getvalue()


def test_no_scheduled_streams_no_problems():
    assert _run() == (0, "")


def test_a_drop_its_stock_cannot_cover_is_one_line_and_exit_1():
    host = host_with_demand_history()
    soon = timezone.now() + timedelta(hours=2)
    stream = StreamFactory(host=host, slug="tonight", scheduled_start=soon, expected_viewers=3000)
    drop = stream_drop(stream=stream, quantity=100, on_hand=150)  # 50 free; 300 wanted
    covered = StreamFactory(host=host, slug="quiet", scheduled_start=soon, expected_viewers=100)
    stream_drop(stream=covered, quantity=100)  # 10 wanted

    code, out = _run()

    assert code == 1
    (line,) = out.splitlines()
    assert line.startswith(f"{soon.isoformat()} tonight drop #{drop.pk} ")
    assert ": demand_exceeds_stock: Likely to sell out in about " in line
    assert "short by about 200 units" in line
    assert line.endswith("Restock 150 units and add 200 to the drop (50 free in stock now).")


def test_json_output_names_each_problem():
    host = host_with_demand_history()
    stream = StreamFactory(host=host, slug="tonight", expected_viewers=2000)
    drop = stream_drop(stream=stream, quantity=100, on_hand=400)  # 200 wanted, 300 free

    code, out = _run("--json")

    assert code == 1
    (problem,) = json.loads(out)["problems"]
    assert (problem["stream"], problem["drop"], problem["problem"]) == (
        "tonight",
        drop.pk,
        "demand_exceeds_drop",
    )
    assert (problem["shortfall"], problem["stock_free"]) == (100, 300)
    assert problem["cover"] == "Add 100 units to the drop; 300 free in stock."


def test_within_hours_leaves_out_later_and_live_streams():
    host = host_with_demand_history()
    later = StreamFactory(
        host=host, scheduled_start=timezone.now() + timedelta(days=3), expected_viewers=3000
    )
    stream_drop(stream=later, quantity=10)
    live = StreamFactory(host=host, status=Stream.Status.LIVE, expected_viewers=3000)
    stream_drop(stream=live, quantity=10)

    assert _run("--within", "24") == (0, "")
    assert _run("--within", "24", "--json")[0] == 0
    code, out = _run()
    assert (code, len(out.splitlines())) == (1, 1)  # the later one, without a window


def test_a_bad_window_is_refused():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("check_readiness", "--within", "0")
