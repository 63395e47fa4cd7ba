"""The catalog, read-only: products with their variants, prices and free stock."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny

from core.api.schema import error_responses
from shop import selectors
from shop.models import Product, Variant


class VariantSerializer(serializers.ModelSerializer):
    available = serializers.SerializerMethodField(help_text="Units on hand not promised.")

    class Meta:
        model = Variant
        fields = ["id", "sku", "name", "price", "currency", "available"]
        read_only_fields = fields

    def get_available(self, variant) -> int:
        stock = getattr(variant, "stock", None)
        return stock.available if stock is not None else 0


class ProductSerializer(serializers.ModelSerializer):
    variants = VariantSerializer(many=True, source="active_variants", read_only=True)

    class Meta:
        model = Product
        fields = ["id", "name", "slug", "description", "image_url", "variants"]
        read_only_fields = fields


class ProductListApi(generics.ListAPIView):
    permission_classes = [AllowAny]
    serializer_class = ProductSerializer

    def get_queryset(self):
        return selectors.product_list()

    @extend_schema(
        operation_id="products_list",
        responses={200: ProductSerializer(many=True), **error_responses(400)},
        summary="Active products with their variants",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ProductDetailApi(generics.RetrieveAPIView):
    permission_classes = [AllowAny]
    serializer_class = ProductSerializer
    lookup_url_kwarg = "product_id"

    def get_queryset(self):
        return selectors.product_list()

    @extend_schema(
        operation_id="products_retrieve",
        responses={200: ProductSerializer, **error_responses(404)},
        summary="One product with its variants",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
