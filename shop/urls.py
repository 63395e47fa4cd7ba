from django.urls import path

from shop.api import auth, catalog

urlpatterns = [
    path("auth/register/", auth.RegisterApi.as_view(), name="auth-register"),
    path("auth/token/", auth.TokenApi.as_view(), name="auth-token"),
    path("auth/logout/", auth.LogoutApi.as_view(), name="auth-logout"),
    path("products/", catalog.ProductListApi.as_view(), name="product-list"),
    path("products/<int:product_id>/", catalog.ProductDetailApi.as_view(), name="product-detail"),
]
