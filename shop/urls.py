from django.urls import path

from shop.api import auth, catalog, orders

urlpatterns = [
    path("auth/register/", auth.RegisterApi.as_view(), name="auth-register"),
    path("auth/token/", auth.TokenApi.as_view(), name="auth-token"),
    path("auth/logout/", auth.LogoutApi.as_view(), name="auth-logout"),
    path("auth/ws-ticket/", auth.WsTicketApi.as_view(), name="auth-ws-ticket"),
    path("products/", catalog.ProductListApi.as_view(), name="product-list"),
    path("products/<id:product_id>/", catalog.ProductDetailApi.as_view(), name="product-detail"),
    path(
        "reservations/<id:reservation_id>/checkout/",
        orders.CheckoutApi.as_view(),
        name="reservation-checkout",
    ),
    path("orders/", orders.OrderListApi.as_view(), name="order-list"),
    path("orders/<id:order_id>/", orders.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<id:order_id>/cancel/", orders.OrderCancelApi.as_view(), name="order-cancel"),
    path("payments/webhook/", orders.PaymentWebhookApi.as_view(), name="payment-webhook"),
]
