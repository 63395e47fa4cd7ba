"""The viewer's whole path on the real stack: an ASGI server process, a Celery worker
process, PostgreSQL and Redis, driven over HTTP like a client would."""

import concurrent.futures
import uuid
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from inventory.models import Reservation, StockItem, StockMovement
from livestream import services as live
from shop.models import Order
from tests.factories import stocked_variant
from tests.inventory.invariants import assert_inventory_invariants
from tests.processes import asgi_server, celery_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.celery_worker, pytest.mark.server]


def _token(http: httpx.Client, username: str, password: str = "viewer-pass-2026") -> str:
    response = http.post("/api/auth/register/", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.mark.django_db(transaction=True)
def test_register_reserve_hold_checkout_paid_and_the_ledger_agrees(celery_through_broker):
    variant = stocked_variant(on_hand=10)

    with celery_worker(concurrency=2), asgi_server(CELERY_TASK_ALWAYS_EAGER="false") as server:
        http = httpx.Client(base_url=server.base_url, timeout=10)
        # The host registers like anyone; ops then put them in the hosts group.
        _token(http, "stage-host", password="host-pass-2026")
        hosts = Group.objects.get_or_create(name="hosts")[0]
        get_user_model().objects.get(username="stage-host").groups.add(hosts)
        login = http.post(
            "/api/auth/token/", json={"username": "stage-host", "password": "host-pass-2026"}
        )
        assert login.status_code == 200
        as_host = {"Authorization": f"Token {login.json()['token']}"}
        stream = http.post("/api/streams/", json={"title": "Launch"}, headers=as_host).json()
        assert (
            http.post(f"/api/streams/{stream['slug']}/start/", headers=as_host).status_code == 200
        )
        drop = http.post(
            f"/api/streams/{stream['slug']}/drops/",
            json={"variant": variant.pk, "quantity": 4, "price": "15.00", "per_viewer_limit": 2},
            headers=as_host,
        ).json()
        assert http.post(f"/api/drops/{drop['id']}/pin/", headers=as_host).status_code == 200

        viewer = {"Authorization": f"Token {_token(http, 'first-buyer')}"}
        key = str(uuid.uuid4())
        reserved = http.post(
            f"/api/drops/{drop['id']}/reservations/",
            json={"quantity": 2},
            headers={**viewer, "Idempotency-Key": key},
        )
        assert reserved.status_code == 202
        hold = reserved.json()
        assert hold["status"] in ("pending", "held")

        held = wait_until(
            lambda: (
                (body := http.get(f"/api/reservations/{hold['id']}/", headers=viewer).json())[
                    "status"
                ]
                == "held"
                and body
            ),
            message="the hold never became held",
        )
        assert held["expires_at"] is not None

        order = http.post(f"/api/reservations/{hold['id']}/checkout/", headers=viewer)
        assert order.status_code == 201, order.text
        assert (order.json()["status"], order.json()["total"]) == ("paid", "30.00")

        live = http.get(f"/api/streams/{stream['slug']}/").json()
        assert (live["pinned_drop"]["remaining"], live["pinned_drop"]["sold"]) == (2, 2)

    assert Order.objects.get().status == "paid"
    stock = StockItem.objects.get(variant=variant)
    assert (stock.on_hand, stock.reserved) == (8, 2)  # 2 sold, 2 still on stage
    assert StockMovement.objects.filter(reason="sale", on_hand_delta=-2).count() == 1
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_one_key_sent_many_times_at_once_over_http_makes_one_hold(celery_through_broker):
    variant = stocked_variant(on_hand=5)
    host = get_user_model().objects.create_user("key-host", password="host-pass-2026")
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = live.stream_create(host=host, title="Keys")
    live.stream_start(stream_id=stream.pk, actor=host)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=5,
        price=Decimal("1.00"),
        per_viewer_limit=None,
        actor=host,
    )
    live.drop_pin(drop_id=drop.pk, actor=host)

    with celery_worker(concurrency=2), asgi_server(CELERY_TASK_ALWAYS_EAGER="false") as server:
        http = httpx.Client(base_url=server.base_url, timeout=10)
        viewer = {
            "Authorization": f"Token {_token(http, 'eager-buyer')}",
            "Idempotency-Key": "once",
        }

        def send(_):
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                return client.post(
                    f"/api/drops/{drop.pk}/reservations/", json={"quantity": 1}, headers=viewer
                )

        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(send, range(12)))

        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["id"] for r in responses}) == 1
        wait_until(lambda: not Reservation.objects.filter(status="pending").exists())

    assert Reservation.objects.count() == 1
    assert Reservation.objects.get().status == "held"
    assert_inventory_invariants()
