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
from tests.factories import DropDemandFactory, StreamFactory, UserFactory, stream_drop

pytestmark = pytest.mark.django_db


def _run(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("check_readiness", *args, stdout=out)
    except SystemExit as exit:
        return exit.code, out.getvalue()
    return 0, out.getvalue()


def _host_with_history():
    """A host whose past (ended) streams say 10 % of viewers at pin want a drop."""
    host = UserFactory()
    for _ in range(5):
        past = StreamFactory(host=host)
        DropDemandFactory(
            drop=stream_drop(stream=past, quantity=10),
            viewers_at_pin=1000,
            buyers=10,
            admitted_units=10,
            viewers_turned_away=90,
        )
        Stream.objects.filter(pk=past.pk).update(status=Stream.Status.ENDED)
    return host


def test_no_scheduled_streams_no_problems():
    assert _run() == (0, "")


def test_a_drop_its_stock_cannot_cover_is_one_line_and_exit_1():
    host = _host_with_history()
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
    host = _host_with_history()
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
    host = _host_with_history()
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


# --- the same warnings in admin, and the demand admin ----------------------------------


@pytest.fixture
def ops(client):
    user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_admin_lists_streams_short_of_stock_and_shows_the_report(ops):
    host = _host_with_history()
    short = StreamFactory(host=host, slug="tonight", title="Tonight", expected_viewers=3000)
    stream_drop(stream=short, quantity=100, on_hand=150)
    fine = StreamFactory(host=host, slug="quiet", title="Quiet", expected_viewers=100)
    stream_drop(stream=fine, quantity=100)

    listed = ops.get("/admin/livestream/stream/?readiness=problems").content.decode()
    everything = ops.get("/admin/livestream/stream/").content.decode()
    page = ops.get(f"/admin/livestream/stream/{short.pk}/change/").content.decode()

    assert "Tonight" in listed and "Quiet" not in listed
    assert "1 drop(s) short" in everything
    assert "readiness report" in page.lower()
    assert "short by about 200 units" in page
    assert "Restock 150 units and add 200 to the drop" in page


def test_demand_admin_is_read_only_and_exports_csv(ops):
    stream = StreamFactory(slug="friday")
    demand = DropDemandFactory(
        drop=stream_drop(stream=stream, quantity=50),
        supply=50,
        sold=50,
        buyers=50,
        viewers_turned_away=30,
        waitlist_only=5,
        viewers_at_pin=900,
    )

    listing = ops.get("/admin/livestream/dropdemand/")
    change = ops.get(f"/admin/livestream/dropdemand/{demand.pk}/change/")
    exported = ops.post(
        "/admin/livestream/dropdemand/",
        {"action": "export_admin_action", "_selected_action": [demand.pk]},
    )

    assert listing.status_code == 200 and "friday" in listing.content.decode()
    assert change.status_code == 200 and 'name="supply"' not in change.content.decode()
    assert ops.get("/admin/livestream/dropdemand/add/").status_code == 403
    assert exported.status_code == 200
    assert exported["Content-Type"].startswith("text/csv")
    header, row = exported.content.decode("utf-8-sig").splitlines()
    columns = dict(zip(header.split(","), row.split(","), strict=True))
    assert (columns["stream"], columns["drop"], columns["supply"]) == (
        "friday",
        str(demand.drop_id),
        "50",
    )
    assert (columns["unmet_demand"], columns["total_demand"]) == ("35", "85")
