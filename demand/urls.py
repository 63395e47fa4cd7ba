from django.urls import path

from demand import apis

# Under the stream's own paths (config/urls.py includes these next to livestream's).
urlpatterns = [
    path(
        "streams/<slug:slug>/readiness/",
        apis.StreamReadinessApi.as_view(),
        name="stream-readiness",
    ),
    path(
        "streams/<slug:slug>/demand/",
        apis.StreamDemandApi.as_view(),
        name="stream-demand",
    ),
]
