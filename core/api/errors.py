"""One place where every API error becomes ``{"code", "detail", ...}`` with the right
status: domain errors carry their code; DRF's own errors get stable codes too."""

from __future__ import annotations

import logging

from django import db
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from redis import exceptions as redis_exceptions
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.exceptions import DomainError

logger = logging.getLogger(__name__)

# DRF exception class -> machine code. Checked in order (subclasses first).
DRF_CODES: tuple[tuple[type[drf.APIException], str], ...] = (
    (drf.ValidationError, "invalid"),
    (drf.ParseError, "invalid"),
    (drf.NotAuthenticated, "not_authenticated"),
    (drf.AuthenticationFailed, "authentication_failed"),
    (drf.PermissionDenied, "permission_denied"),
    (drf.NotFound, "not_found"),
    (drf.MethodNotAllowed, "method_not_allowed"),
    (drf.NotAcceptable, "not_acceptable"),
    (drf.UnsupportedMediaType, "unsupported_media_type"),
    (drf.Throttled, "throttled"),
)


def _code_for(exc: drf.APIException) -> str:
    for cls, code in DRF_CODES:
        if isinstance(exc, cls):
            return code
    return "error"


# A dependency that cannot answer right now (no database connection free within the
# pool's timeout under overload, Redis away): the request may well succeed again soon.
UNAVAILABLE = (db.OperationalError, redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)
RETRY_AFTER_SECONDS = 1


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(exc.body(), status=exc.http_status)
    if isinstance(exc, UNAVAILABLE):
        logger.warning("answering 503 in %s: %s", context.get("view"), exc)
        return Response(
            {
                "code": "unavailable",
                "detail": "The service is busy or a dependency is unavailable; retry shortly.",
                "retry_after": RETRY_AFTER_SECONDS,
            },
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        # Not an API error: a bug. Answer in the same JSON shape and log it loudly.
        logger.exception("unhandled error in %s", context.get("view"), exc_info=exc)
        return Response({"code": "server_error", "detail": "Internal error."}, status=500)
    code = _code_for(exc)
    if isinstance(exc, drf.ValidationError | drf.ParseError):
        errors = exc.detail if isinstance(exc, drf.ValidationError) else None
        detail = "Invalid input." if errors is not None else str(exc.detail)
        body = {"code": code, "detail": detail}
        if errors is not None:
            body["errors"] = errors if isinstance(errors, dict) else {"non_field_errors": errors}
        response.data = body
    else:
        response.data = {"code": code, "detail": str(exc.detail)}
        if isinstance(exc, drf.Throttled) and exc.wait is not None:
            response.data["retry_after"] = int(exc.wait + 0.999)
    return response


# Django-level handlers for requests no view answered (an unknown URL, an error outside
# DRF): JSON under /api/, Django's own pages elsewhere (admin, browser pages).
def _api_or_page(status: int, code: str, detail: str, page):
    def handler(request, exception=None):
        if request.path.startswith("/api/"):
            return JsonResponse({"code": code, "detail": detail}, status=status)
        return page(request, exception) if status != 500 else page(request)

    return handler


json_400 = _api_or_page(400, "invalid", "Bad request.", defaults.bad_request)
json_403 = _api_or_page(403, "permission_denied", "Forbidden.", defaults.permission_denied)
json_404 = _api_or_page(404, "not_found", "Not found.", defaults.page_not_found)
json_500 = _api_or_page(500, "server_error", "Internal error.", defaults.server_error)


@csrf_exempt  # any method: a POST to no route is a 404, not a CSRF failure page
def api_not_found(request, unmatched: str = ""):
    """The last route under /api/: with DEBUG on, Django answers an unknown URL with its
    HTML debug page instead of calling ``handler404``; the API answers JSON in every mode."""
    return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)


def locked_out(request, *args, **kwargs):
    """django-axes' answer to a locked-out sign-in (``AXES_LOCKOUT_CALLABLE``): JSON with
    a machine code on the API, a plain page on the HTML login forms."""
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    detail = "Too many failed sign-ins; try again later."
    headers = {"Retry-After": str(seconds)}
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"code": "locked_out", "detail": detail, "retry_after": seconds},
            status=429,
            headers=headers,
        )
    return HttpResponse(
        f"{detail} Retry in {seconds // 60 or 1} minutes.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
        headers=headers,
    )
