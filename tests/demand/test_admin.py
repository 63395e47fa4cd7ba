"""The readiness warnings in the Stream admin (the same as ``check_readiness``), and the
demand admin: read-only, with a CSV export."""

from __future__ import annotations

import pytest

from tests.factories import (
    DropDemandFactory,
    StreamFactory,
    UserFactory,
    host_with_demand_history,
    stream_drop,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops(client):
    user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_admin_lists_streams_short_of_stock_and_shows_the_report(ops):
    host = host_with_demand_history()
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

    listing = ops.get("/admin/demand/dropdemand/")
    change = ops.get(f"/admin/demand/dropdemand/{demand.pk}/change/")
    exported = ops.post(
        "/admin/demand/dropdemand/",
        {"action": "export_admin_action", "_selected_action": [demand.pk]},
    )

    assert listing.status_code == 200 and "friday" in listing.content.decode()
    assert change.status_code == 200 and 'name="supply"' not in change.content.decode()
    assert ops.get("/admin/demand/dropdemand/add/").status_code == 403
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
