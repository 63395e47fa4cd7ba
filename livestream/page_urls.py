"""URLs of the browser pages (the API is in ``livestream.urls``, under ``/api/``)."""

from django.urls import path
from django.views.generic import RedirectView

from livestream import pages

app_name = "pages"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="pages:stream-list"), name="home"),
    path("streams/", pages.stream_list, name="stream-list"),
    path("streams/<slug:slug>/", pages.stream_viewer, name="stream-viewer"),
    path("streams/<slug:slug>/host/", pages.stream_host, name="stream-host"),
]
