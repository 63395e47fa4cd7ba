"""Checkout, orders and the payment provider's webhook: thin views over shop services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import error_responses
from shop import selectors, services
from shop.models import Order, OrderLine


class OrderLineSerializer(serializers.ModelSerializer):
    sku = serializers.CharField(source="variant.sku", read_only=True)

    class Meta:
        model = OrderLine
        fields = ["variant", "sku", "quantity", "unit_price", "line_total"]
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "total",
            "currency",
            "lines",
            "reservation",
            "created_at",
            "paid_at",
        ]
        read_only_fields = fields


class WebhookResultSerializer(serializers.Serializer):
    result = serializers.ChoiceField(choices=["processed", "duplicate", "ignored"])


class CheckoutApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="reservations_checkout",
        request=None,
        responses={201: OrderSerializer, **error_responses(401, 402, 404, 409)},
        summary="Turn your held reservation into an order and pay for it",
        description="Priced from the hold (the drop price). Checking out the same hold again "
        "answers the same order and charges nothing. `409` `hold_expired` when the hold ran "
        "out; `402` `payment_failed` when the payment was declined (retry while the hold "
        "lasts).",
    )
    def post(self, request: Request, reservation_id: int) -> Response:
        order = services.checkout_create(customer_id=request.user.pk, reservation_id=reservation_id)
        order = selectors.order_get_for(customer_id=request.user.pk, order_id=order.pk)
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)


class OrderListApi(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = OrderSerializer

    def get_queryset(self):
        return selectors.order_list_for(customer_id=self.request.user.pk)

    @extend_schema(
        operation_id="orders_list",
        responses={200: OrderSerializer(many=True), **error_responses(400, 401)},
        summary="Your orders, newest first",
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class OrderDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="orders_retrieve",
        responses={200: OrderSerializer, **error_responses(401, 404)},
        summary="One of your orders",
    )
    def get(self, request: Request, order_id: int) -> Response:
        order = selectors.order_get_for(customer_id=request.user.pk, order_id=order_id)
        return Response(OrderSerializer(order).data)


class OrderCancelApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="orders_cancel",
        request=None,
        responses={200: OrderSerializer, **error_responses(401, 404, 409)},
        summary="Cancel your order: an unpaid one releases its hold, a paid one is refunded",
    )
    def post(self, request: Request, order_id: int) -> Response:
        order = services.order_cancel(order_id=order_id, customer_id=request.user.pk)
        order = selectors.order_get_for(customer_id=request.user.pk, order_id=order.pk)
        return Response(OrderSerializer(order).data)


class PaymentWebhookApi(APIView):
    """Called by the payment provider; authenticated by its signature, not by a user."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        operation_id="payments_webhook",
        request={"application/json": {"type": "object"}},
        responses={
            200: WebhookResultSerializer,
            400: OpenApiResponse(description="`invalid_signature` or `invalid_payload`"),
            409: OpenApiResponse(
                description="`payment_mismatch`: a success for another amount or currency "
                "than the payment's; nothing is confirmed"
            ),
        },
        summary="Payment events from the provider (signed; each event id is processed once)",
    )
    def post(self, request: Request) -> Response:
        result = services.payment_webhook_handle(body=request.body, headers=request.headers)
        return Response({"result": result})
