from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from inventory import services
from tests.factories import ProductFactory, VariantFactory, stocked_variant

pytestmark = pytest.mark.django_db


def test_products_list_shows_active_variants_with_free_stock(django_assert_max_num_queries):
    variant = stocked_variant(on_hand=10, price=Decimal("12.50"))
    services.allocation_create(stock_item_id=variant.stock.pk, quantity=4)
    VariantFactory(product=variant.product, is_active=False)
    ProductFactory(is_active=False)

    with django_assert_max_num_queries(3):
        response = APIClient().get("/api/products/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    product = body["results"][0]
    assert product["id"] == variant.product.pk
    assert product["variants"] == [
        {
            "id": variant.pk,
            "sku": variant.sku,
            "name": variant.name,
            "price": "12.50",
            "currency": "USD",
            "available": 6,
        }
    ]


def test_product_detail_and_unknown_product():
    variant = stocked_variant(on_hand=1)
    api = APIClient()

    assert api.get(f"/api/products/{variant.product.pk}/").json()["slug"] == variant.product.slug
    missing = api.get("/api/products/999999/")
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "detail": "Not found."}


def test_an_unknown_api_path_answers_json_404():
    response = APIClient().get("/api/nothing-here/")

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_catalog_is_read_only():
    response = APIClient().post("/api/products/", {"name": "x"}, format="json")

    assert response.status_code in (401, 405)
    assert response.json()["code"] in ("not_authenticated", "method_not_allowed")
