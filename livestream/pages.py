"""Browser pages of the live part: the stream list, the viewer page and the host
console. Thin: they render a snapshot from the selectors; everything live (counters,
pins, holds) then comes from the websocket and the REST API, driven by small scripts in
``livestream/static/livestream/``.

Errors render our own HTML pages with the right status, not Django's handlers: those
answer JSON under ``/api/`` and a debug page when ``DEBUG`` is on, neither of which a
viewer should see here.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.exceptions import NotFound
from livestream import selectors
from livestream.exceptions import NotStreamHost
from livestream.models import Stream
from livestream.services import stream_check_control


def _can_control(stream: Stream, user) -> bool:
    try:
        stream_check_control(stream=stream, user=user)
    except NotStreamHost:
        return False
    return True


def _stream_or_none(slug: str) -> Stream | None:
    try:
        return selectors.stream_get(slug=slug)
    except NotFound:
        return None


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "livestream/not_found.html", status=404)


def stream_list(request: HttpRequest) -> HttpResponse:
    streams = [
        {"stream": stream, "can_host": _can_control(stream, request.user)}
        for stream in selectors.stream_list()
    ]
    return render(request, "livestream/stream_list.html", {"streams": streams})


def stream_viewer(request: HttpRequest, slug: str) -> HttpResponse:
    stream = _stream_or_none(slug)
    if stream is None:
        return _not_found(request)
    context = {
        "stream": stream,
        "snapshot": selectors.stream_snapshot(stream=stream),
        "can_host": _can_control(stream, request.user),
    }
    return render(request, "livestream/stream_viewer.html", context)


@login_required
def stream_host(request: HttpRequest, slug: str) -> HttpResponse:
    stream = _stream_or_none(slug)
    if stream is None:
        return _not_found(request)
    if not _can_control(stream, request.user):
        return render(request, "livestream/forbidden.html", {"stream": stream}, status=403)
    context = {"stream": stream, "snapshot": selectors.stream_snapshot(stream=stream)}
    return render(request, "livestream/stream_host.html", context)
