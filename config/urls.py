from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import health
from core.api import errors
from core.converters import IdConverter

register_converter(IdConverter, "id")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("monitoring.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("shop.urls")),
    path("api/", include("livestream.urls")),
    path("api/", include("draws.urls")),
    path("api/", include("demand.urls")),
    # After every API route: the rest of /api/ is a JSON 404, with DEBUG on too.
    re_path(r"^api/(?P<unmatched>.*)$", errors.api_not_found),
    # Browser pages sign in with the session (the API also takes tokens). At Django's
    # default LOGIN_URL; explicit templates, as the admin app ships its own
    # registration/logged_out.html; without ?next= a viewer lands on the stream list.
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html",
            redirect_authenticated_user=True,
            next_page="pages:stream-list",
        ),
        name="login",
    ),
    path(
        "accounts/logout/",
        auth_views.LogoutView.as_view(template_name="registration/signed_out.html"),
        name="logout",
    ),
    path("", include("livestream.page_urls")),
]

handler400 = "core.api.errors.json_400"
handler403 = "core.api.errors.json_403"
handler404 = "core.api.errors.json_404"
handler500 = "core.api.errors.json_500"
